"""Prometheus metrics of the trainer, in the server's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from lattice.v1 import trainer_pb2


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Gauge("lattice_trainer_jobs", "Jobs by state.", ["state"], registry=registry)
        self.tokens_per_second = Gauge(
            "lattice_trainer_tokens_per_second",
            "Training throughput of the latest step of running jobs (summed).",
            registry=registry,
        )
        self.steps = Counter(
            "lattice_trainer_steps", "Optimiser steps reported by workers.", registry=registry
        )
        self.alerts = Counter(
            "lattice_trainer_alerts",
            "Training alerts, by kind and action.",
            ["kind", "action"],
            registry=registry,
        )
        self.attempts = Counter(
            "lattice_trainer_process_group_starts",
            "torchrun process groups started (restarts included).",
            registry=registry,
        )
        self.registrations = Counter(
            "lattice_trainer_registrations", "Versions registered.", registry=registry
        )
        self.datasets = Counter(
            "lattice_trainer_datasets_prepared", "Datasets prepared.", registry=registry
        )

    def set_job_counts(self, counts: dict[int, int]) -> None:
        for name, value in trainer_pb2.JobState.items():
            if value:
                self.jobs.labels(name.removeprefix("JOB_STATE_").lower()).set(counts.get(value, 0))

    def alert(self, alert: trainer_pb2.TrainingAlert) -> None:
        if alert.cleared:  # the end of an episode, not an alert
            return
        self.alerts.labels(
            trainer_pb2.AlertKind.Name(alert.kind).removeprefix("ALERT_KIND_").lower(),
            trainer_pb2.AlertAction.Name(alert.action).removeprefix("ALERT_ACTION_").lower(),
        ).inc()
