"""Prometheus metrics of the registry, registered in the server's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RegistryMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.watch_subscribers = Gauge(
            "lattice_registry_watch_subscribers", "Open Watch streams.", registry=registry
        )
        self.watch_resets = Counter(
            "lattice_registry_watch_overflow_resets",
            "Watch subscribers that fell behind and were sent a fresh snapshot.",
            registry=registry,
        )
        self.revision = Gauge(
            "lattice_registry_revision", "The current global revision.", registry=registry
        )
        self.artifact_bytes = Gauge(
            "lattice_registry_artifact_bytes",
            "Bytes held in the artifact store.",
            registry=registry,
        )
        self.artifact_received_bytes = Counter(
            "lattice_registry_artifact_received_bytes",
            "Artifact bytes received by UploadArtifact (including duplicates).",
            registry=registry,
        )
        self.artifact_sent_bytes = Counter(
            "lattice_registry_artifact_sent_bytes",
            "Artifact bytes sent by DownloadArtifact.",
            registry=registry,
        )
        self.db_duration = Histogram(
            "lattice_registry_db_seconds",
            "Database transaction time, by operation.",
            ["operation"],
            registry=registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        )
