"""Stores written before objects had owners: every row goes to the configured default tenant.

A registry database at schema version 1 (built with migration 1 itself, rows written
as that version wrote them), and trainer stores from before datasets and jobs had
owners, are opened by the current code; their objects then belong to the default
tenant, that tenant (and admins) see them, others get NOT_FOUND.
"""

from __future__ import annotations

import dataclasses
import sqlite3

import grpc
import pytest
from grpc import aio

from lattice.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2
from services.registry.migrations import MIGRATIONS, _statements
from services.registry.server import build_server
from services.runtime.identity import Caller
from services.trainer.data.store import RECORD, DatasetStore
from services.trainer.jobs.store import JobStore
from tests.registry.conftest import settings_for
from tests.support.identity import ADMIN, caller_channel

LEGACY = Caller(tenant="legacy", subject="old-timer")
NEWCOMER = Caller(tenant="newcomer", subject="new")


def _schema_v1(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _statements(MIGRATIONS[0]):  # type: ignore[arg-type]
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    return conn


def _write_v1_registry(path) -> None:
    conn = _schema_v1(path)
    model = registry_pb2.Model(name="old", task=1, latest_version=1)
    version = registry_pb2.ModelVersion(model_name="old", version=1, artifact_digest="ab" * 32)
    deployment = registry_pb2.Deployment(
        model_name="old", routes=[registry_pb2.Route(version=1, weight=100)], revision=3
    )
    entry = registry_pb2.DeploymentHistoryEntry(
        revision=3, model_name="old", to_deployment=deployment
    )
    rows = [
        ("models", "name", ("old",), model),
        ("versions", "model_name, version", ("old", 1), version),
        ("deployments", "model_name", ("old",), deployment),
    ]
    for table, keys, values, message in rows:
        marks = ", ".join("?" * (len(values) + 1))
        conn.execute(
            f"INSERT INTO {table} ({keys}, body) VALUES ({marks})",
            (*values, message.SerializeToString()),
        )
    conn.execute(
        "INSERT INTO deployment_history (revision, model_name, body) VALUES (3, 'old', ?)",
        (entry.SerializeToString(),),
    )
    put = registry_pb2.WatchResponse(
        type=registry_pb2.WATCH_EVENT_TYPE_PUT, revision=3, deployment=deployment
    )
    conn.execute(
        "INSERT INTO events (revision, seq, body) VALUES (3, 0, ?)", (put.SerializeToString(),)
    )
    conn.execute("UPDATE meta SET value = 3 WHERE key = 'revision'")
    conn.close()


async def test_registry_rows_without_owner_go_to_the_default_tenant(tmp_path):
    db = tmp_path / "registry" / "registry.db"
    db.parent.mkdir(parents=True)
    _write_v1_registry(db)
    server = await build_server(settings_for(tmp_path, default_tenant="legacy"))
    await server.start()
    try:
        async with caller_channel(server, LEGACY) as channel:
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            model = (await stub.GetModel(registry_pb2.GetModelRequest(name="old"))).model
            assert model.tenant == "legacy"
            version = await stub.GetVersion(
                registry_pb2.GetVersionRequest(model_name="old", version=1)
            )
            assert version.version.tenant == "legacy"
            history = await stub.ListDeploymentHistory(registry_pb2.ListDeploymentHistoryRequest())
            assert [(e.revision, e.tenant) for e in history.entries] == [(3, "legacy")]
            # A resume inside the retained log replays the migrated event, owner and all.
            replay = stub.Watch(registry_pb2.WatchRequest(from_revision=2))
            first = await replay.read()
            assert first.deployment.tenant == "legacy"
            replay.cancel()
        async with caller_channel(server, NEWCOMER) as channel:
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as info:
                await stub.GetModel(registry_pb2.GetModelRequest(name="old"))
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await stub.ListDeploymentHistory(registry_pb2.ListDeploymentHistoryRequest())
            assert not listed.entries
    finally:
        await server.stop(0)


def test_jobs_without_owner_go_to_the_default_tenant_and_keep_their_key(tmp_path):
    path = tmp_path / "jobs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, request_id TEXT UNIQUE,"
        " state INTEGER NOT NULL, job BLOB NOT NULL, pgid INTEGER NOT NULL DEFAULT 0,"
        " pg_start REAL NOT NULL DEFAULT 0, events_offset INTEGER NOT NULL DEFAULT 0,"
        " last_sequence INTEGER NOT NULL DEFAULT 0)"
    )
    old = trainer_pb2.Job(id="job-old", state=trainer_pb2.JOB_STATE_SUCCEEDED)
    conn.execute(
        "INSERT INTO jobs (id, seq, request_id, state, job) VALUES ('job-old', 1, 'nightly', ?, ?)",
        (old.state, old.SerializeToString()),
    )
    conn.close()
    store = JobStore(path, default_tenant="legacy")
    try:
        assert store.get_for(LEGACY, "job-old").tenant == "legacy"
        assert store.by_request_id("legacy", "nightly").id == "job-old"
        assert store.by_request_id("newcomer", "nightly") is None
        with pytest.raises(Exception, match="not found"):
            store.get_for(NEWCOMER, "job-old")
        assert [j.id for j in store.list(tenant="legacy")] == ["job-old"]
        assert store.list(tenant="newcomer") == []
    finally:
        store.close()
    JobStore(path, default_tenant="other").close()  # migrates once: owners stay


def test_datasets_without_owner_go_to_the_default_tenant(tmp_path):
    folder = tmp_path / "old-0123456789ab"
    folder.mkdir()
    (folder / RECORD).write_bytes(
        trainer_pb2.Dataset(id="old-0123456789ab", name="old").SerializeToString()
    )
    store = DatasetStore(tmp_path, default_tenant="legacy")
    assert store.visible(LEGACY, "old-0123456789ab").tenant == "legacy"
    assert [d.id for d in store.list_for(ADMIN)] == ["old-0123456789ab"]
    assert store.list_for(NEWCOMER) == []
    again = DatasetStore(tmp_path, default_tenant="other")  # the owner was written back
    assert again.get("old-0123456789ab").tenant == "legacy"
    assert dataclasses.replace(NEWCOMER, scopes=frozenset({"admin"})).may_see("legacy")
