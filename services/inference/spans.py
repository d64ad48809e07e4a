"""`with current_span(tracer.start_span(name)):` -- `start_as_current_span`
for the request path, without its cost when the span does not record.

A span that does not record (no SDK installed, or not sampled) carries its
parent's trace context anyway, so making it current changes nothing that is
propagated; `start_as_current_span` still attaches and detaches it through
two generator-based context managers, a few microseconds on every request.
A recording span is made current, ended, and marked with an escaping
exception exactly as `start_as_current_span` does.
"""

from __future__ import annotations

from contextvars import Token

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode


class current_span:
    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: Token[Context] | None = None

    def __enter__(self) -> trace.Span:
        span = self._span
        if span.is_recording():
            self._token = context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type, exc, tb) -> None:
        span = self._span
        try:
            if exc is not None and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{exc_type.__name__}: {exc}"))
        finally:
            if self._token is not None:
                context.detach(self._token)
            span.end()
