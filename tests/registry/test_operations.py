"""Operational behaviour: drain ends Watch streams, metrics and DB spans are recorded."""

from __future__ import annotations

import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.registry.server import build_server
from tests.registry.conftest import settings_for
from tests.registry.support import RegistryClient
from tests.support.identity import caller_channel


async def test_drain_ends_watch_streams_promptly(tmp_path):
    server = await build_server(settings_for(tmp_path, grace_seconds=10))
    await server.start()
    async with caller_channel(server) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        stream = stub.Watch(registry_pb2.WatchRequest())
        events = [await anext(aiter(stream)), await anext(aiter(stream))]
        assert events[-1].type == registry_pb2.WATCH_EVENT_TYPE_SYNCED
        started = time.monotonic()
        await server.stop()  # the 10 s grace is not waited out
        assert time.monotonic() - started < 5
        rest = [event async for event in stream]
        assert rest == []


async def test_metrics_and_database_spans(tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server = await build_server(settings_for(tmp_path), tracer_provider=provider)
    await server.start()
    try:
        async with caller_channel(server) as channel:
            client = RegistryClient(registry_pb2_grpc.ModelRegistryServiceStub(channel))
            await client.model("m")
            await client.version("m", b"x" * 1234)
            stream = client.stub.Watch(registry_pb2.WatchRequest())
            await anext(aiter(stream))
            sample = server.metrics_registry.get_sample_value
            assert sample("lattice_registry_watch_subscribers") == 1
            assert sample("lattice_registry_artifact_bytes") == 1234
            assert sample("lattice_registry_revision") == 2
            assert sample("lattice_registry_db_seconds_count", {"operation": "create_version"}) == 1
            stream.cancel()
    finally:
        await server.stop(0)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    db_span = spans["registry.db create_version"]
    rpc_span = next(
        s for s in spans.values() if s.name.endswith("ModelRegistryService/CreateVersion")
    )
    assert db_span.parent is not None and db_span.parent.span_id == rpc_span.context.span_id
    assert db_span.attributes["db.system"] == "sqlite"
