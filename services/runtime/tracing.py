"""RPC spans with the OpenTelemetry API directly, server and client side.

Why not `opentelemetry-instrumentation-grpc`: its aio interceptors rebuild a
method handler, wrap the servicer context in a proxy and run a context
manager chain on every call. This module does the same observable work (W3C
trace context from/into metadata, a SERVER or CLIENT span named after the
method with the `rpc.*` attributes, the gRPC status) and nothing else, and
does all attribute work only for a span that records.

Without an SDK tracer provider (no exporter configured, see
`telemetry.install_global_tracing`) spans do not record: an incoming trace
context then passes through unchanged (same trace id downstream and in the
logs), which is what OpenTelemetry does without an SDK.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode

INSTRUMENTATION = "lattice.rpc"
_EMPTY = Context()


def _status_code(code: grpc.StatusCode) -> int:
    return code.value[0]


def propagation_fields() -> frozenset[str]:
    """Metadata keys the configured propagators read (traceparent, tracestate, baggage)."""
    return frozenset(propagate.get_global_textmap().fields)


def method_attributes(method: str) -> dict[str, str]:
    """`rpc.*` attributes of a full method name like "/pkg.Service/Method"."""
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class ServerSpans:
    """Starts the SERVER span of each inbound RPC, continuing the caller's trace."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)
        self.fields = propagation_fields()

    def start(
        self, method: str, attributes: Mapping[str, str], carrier: dict[str, str] | None
    ) -> trace.Span:
        """A span for `method` whose parent is the context in `carrier`, if any."""
        parent = propagate.extract(carrier) if carrier else _EMPTY
        span = self._tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        if span is not INVALID_SPAN:
            otel_context.attach(trace.set_span_in_context(span, parent))
        return span


def finish_span(span: trace.Span, code: grpc.StatusCode) -> None:
    """Record the final status on a recording `span` and end it."""
    span.set_attribute("rpc.grpc.status_code", _status_code(code))
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, code.name))
    span.end()


class ClientSpans:
    """CLIENT spans for outgoing calls, and the metadata that carries them."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)

    def start(self, method: str, attributes: Mapping[str, str]) -> tuple[trace.Span, dict]:
        """A CLIENT span under the current context, and the trace headers to send."""
        span = self._tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        # Not recording without an SDK: the span is the current (remote) one or
        # invalid, so the caller's context passes through or nothing is sent.
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, carrier
