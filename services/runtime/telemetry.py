"""OpenTelemetry tracing and Prometheus metrics for one server process.

Tracing exports over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the
traces-only variant) is set. Otherwise no SDK is installed: spans nobody
can read are not recorded, but the OpenTelemetry API still carries an
incoming trace context through the process (the same trace id reaches the
logs and the next hop), as it does in any process without an SDK. Metrics
live in a registry per server, not in the process-global default, so
several servers can share a test process.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from services.runtime.loop_metrics import LoopCounter, LoopGauge, LoopHistogram

log = logging.getLogger(__name__)


_OTLP_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def exporter_configured() -> bool:
    """True when an OTLP endpoint for traces is set in the environment."""
    return any(os.environ.get(name) for name in _OTLP_ENDPOINTS)


#: Spans per OTLP export unless OTEL_BSP_MAX_EXPORT_BATCH_SIZE says otherwise. The
#: SDK's 512 makes its export thread hold the GIL for milliseconds at a time
#: (encoding the batch), which stalls the event loop: +6 ms p99 through the
#: gateway measured here, +2 ms with 64.
EXPORT_BATCH_SIZE = 64


def _export_batch_size() -> int | None:
    """None lets the SDK read OTEL_BSP_MAX_EXPORT_BATCH_SIZE when it is set."""
    return None if os.environ.get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") else EXPORT_BATCH_SIZE


def create_tracer_provider(service: str) -> TracerProvider:
    """A tracer provider named after the service, exporting OTLP if configured."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"lattice-{service}"}))
    if exporter_configured():
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(), max_export_batch_size=_export_batch_size())
        )
    return provider


def install_global_tracing(service: str) -> TracerProvider | None:
    """Set the process-wide tracer provider when spans can go somewhere.

    Call once, from a process entry point. Without an exporter this installs
    nothing and returns None (context propagation only, see the module doc).
    """
    if not exporter_configured():
        log.debug("no OTLP endpoint: spans are not recorded, trace context still propagates")
        return None
    provider = create_tracer_provider(service)
    trace.set_tracer_provider(provider)
    return provider


class LabelledChildren:
    """Labelled children of one metric, looked up once per label set.

    `metric.labels(...)` validates and locks on every call, microseconds that
    a hot path would pay several times per request; this dict answers
    instead. It holds exactly the label sets the metric itself holds, so it
    grows no more than the metric's own cardinality.
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class RpcMetrics:
    """Per-RPC counters and latency, in the server's own registry (updated on the
    event loop by the RPC wrapper, hence the lock-free kind)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = LoopCounter(
            "lattice_rpc_requests",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=registry,
        )
        self.duration = LoopHistogram(
            "lattice_rpc_duration_seconds",
            "RPC handling time, by method.",
            ["method"],
            registry=registry,
            buckets=(
                0.0005,
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
            ),
        )
        self.in_flight = LoopGauge(
            "lattice_rpc_in_flight", "RPCs being handled now.", registry=registry
        )


class MetricsEndpoint:
    """Serves a registry on http(s)://host:port/metrics in a background thread
    (HTTPS with the server's own certificate when it has one)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        *,
        certfile: str = "",
        keyfile: str = "",
    ) -> None:
        tls = bool(certfile and keyfile)
        self._server, self._thread = start_http_server(
            port,
            addr=host,
            registry=registry,
            certfile=certfile if tls else None,
            keyfile=keyfile if tls else None,
        )
        self.port: int = self._server.server_address[1]
        scheme = "https" if tls else "http"
        log.info("metrics on %s://%s:%d/metrics", scheme, host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
