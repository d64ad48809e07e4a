"""`current_span`: a recording span is current, ended and marked on error like
`start_as_current_span`; a non-recording one is not attached (nothing changes)."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode

from services.inference.spans import current_span


def test_a_recording_span_is_current_and_marked_on_error():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(__name__)
    with current_span(tracer.start_span("outer")) as outer:
        assert trace.get_current_span() is outer
        with pytest.raises(ValueError), current_span(tracer.start_span("inner")):
            raise ValueError("boom")
        assert trace.get_current_span() is outer
    assert trace.get_current_span() is trace.INVALID_SPAN
    inner, outer_done = exporter.get_finished_spans()
    assert inner.parent.span_id == outer_done.context.span_id
    assert inner.status.status_code is StatusCode.ERROR
    assert inner.events[0].name == "exception"


def test_a_non_recording_span_leaves_the_context_alone():
    before = trace.get_current_span()
    tracer = NoOpTracerProvider().get_tracer(__name__)
    with current_span(tracer.start_span("quiet")) as span:
        assert not span.is_recording()
        assert trace.get_current_span() is before
