"""The Registry class driven directly, without gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from lattice.errors import NotFound
from lattice.v1 import common_pb2, registry_pb2
from services.registry.artifacts import ArtifactStore
from services.registry.metrics import RegistryMetrics
from services.registry.registry import Registry
from services.registry.store import Database, SqliteStore
from tests.support.identity import ADMIN


def _registry(root) -> Registry:
    metrics = RegistryMetrics(CollectorRegistry())
    database = Database(lambda: SqliteStore(root / "r.db"), tracer=trace.get_tracer("test"))
    return Registry(database, ArtifactStore(root / "artifacts"), metrics)


@pytest.fixture
async def registry(tmp_path) -> AsyncIterator[Registry]:
    registry = _registry(tmp_path)
    await registry.open()
    yield registry
    await registry.close()


def _model(name: str) -> registry_pb2.Model:
    return registry_pb2.Model(name=name, task=common_pb2.MODEL_TASK_EMBEDDING)


async def test_a_cancelled_caller_does_not_desync_memory_and_disk(registry, tmp_path):
    first = asyncio.create_task(registry.create_model(ADMIN, _model("a")))
    await asyncio.sleep(0)  # the write is under way on the database thread
    first.cancel()
    second = await registry.create_model(ADMIN, _model("b"))
    assert second.name == "b"
    assert registry.revision == 2
    assert set(registry.state.models) == {"a", "b"}  # the cancelled write still landed
    await registry.close()

    reopened = _registry(tmp_path)
    await reopened.open()
    try:
        assert reopened.revision == 2 and set(reopened.state.models) == {"a", "b"}
    finally:
        await reopened.close()


async def test_concurrent_writers_get_consecutive_revisions(registry):
    created = await asyncio.gather(
        *(registry.create_model(ADMIN, _model(f"m{i}")) for i in range(20))
    )
    assert len(created) == 20 and registry.revision == 20
    events = []
    async for event in registry.watch(ADMIN, 0, []):
        events.append(event)
        if event.type == registry_pb2.WATCH_EVENT_TYPE_SYNCED:
            break
    assert len(events) == 22  # RESET, 20 models, SYNCED


async def test_failed_validation_changes_nothing(registry):
    await registry.create_model(ADMIN, _model("m"))
    with pytest.raises(NotFound):
        await registry.set_alias(ADMIN, "m", "prod", 1, 0)
    assert registry.revision == 1
    assert registry.hub.oldest_replayable == 0
