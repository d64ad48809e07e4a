"""Fixtures for the runtime tests: in-process servers with an in-memory span exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime import LatticeServer, ServerSettings
from tests.runtime.servicers import ProbeInference, inference_service


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


@pytest.fixture
async def probe_server(tracer_provider: TracerProvider) -> AsyncIterator[LatticeServer]:
    """A probe server with a 64 KiB message limit."""
    server = LatticeServer(
        [inference_service(ProbeInference(tracer_provider))],
        ServerSettings(port=0, max_message_bytes=64 * 1024),
        tracer_provider=tracer_provider,
    )
    await server.start()
    yield server
    await server.stop(0)
