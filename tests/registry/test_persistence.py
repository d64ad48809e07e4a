"""Durability: a restart keeps everything; a SIGKILL mid-burst loses no acknowledged write."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from lattice.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.registry.migrations import SCHEMA_VERSION, SchemaTooNew
from services.registry.server import build_server
from services.registry.store import SqliteStore
from services.suite.ports import free_port
from tests.registry.conftest import settings_for
from tests.registry.support import RegistryClient
from tests.support.health import wait_serving
from tests.support.identity import ADMIN, caller_channel, signed_channel

ROOT = Path(__file__).resolve().parents[2]


async def test_restart_keeps_everything(tmp_path):
    server = await build_server(settings_for(tmp_path))
    await server.start()
    async with caller_channel(server) as channel:
        client = RegistryClient(registry_pb2_grpc.ModelRegistryServiceStub(channel))
        await client.model("m")
        v1 = await client.version("m", b"one")
        await client.version("m", b"two")
        await client.stub.SetAlias(
            registry_pb2.SetAliasRequest(model_name="m", alias="a", version=2)
        )
        await client.deploy("m", (1, 70), (2, 30), reason="r")
        await client.stub.SetPolicy(
            registry_pb2.SetPolicyRequest(
                policy=registry_pb2.ModelPolicy(model_name="m", allowed_tenants=["t"])
            )
        )
        before = await _dump(client)
    await server.stop(0)

    server = await build_server(settings_for(tmp_path))
    await server.start()
    try:
        async with caller_channel(server) as channel:
            client = RegistryClient(registry_pb2_grpc.ModelRegistryServiceStub(channel))
            assert await _dump(client) == before
            # The replay log survived too: resuming from revision 3 needs no snapshot.
            stream = client.stub.Watch(registry_pb2.WatchRequest(from_revision=3))
            first = await anext(aiter(stream))
            assert first.revision == 4 and first.type == registry_pb2.WATCH_EVENT_TYPE_PUT
            stream.cancel()
            data = [
                m
                async for m in client.stub.DownloadArtifact(
                    registry_pb2.DownloadArtifactRequest(digest=v1.artifact_digest)
                )
            ]
            assert data[1].chunk == b"one"
            assert (await client.version("m")).version == 3
    finally:
        await server.stop(0)


async def _dump(client: RegistryClient) -> tuple:
    stub = client.stub
    models = await stub.ListModels(registry_pb2.ListModelsRequest())
    versions = await stub.ListVersions(registry_pb2.ListVersionsRequest(model_name="m"))
    aliases = await stub.ListAliases(registry_pb2.ListAliasesRequest(model_name="m"))
    deployment = await stub.GetDeployment(registry_pb2.GetDeploymentRequest(model_name="m"))
    policy = await stub.GetPolicy(registry_pb2.GetPolicyRequest(model_name="m"))
    history = await stub.ListDeploymentHistory(registry_pb2.ListDeploymentHistoryRequest())
    return models, versions, aliases, deployment, policy, history


def test_schema_is_versioned_wal_and_refuses_newer(tmp_path):
    store = SqliteStore(tmp_path / "r.db")
    assert store.journal_mode() == "wal"
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()
    store = SqliteStore(tmp_path / "r.db")  # idempotent on an up-to-date database
    store.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store.close()
    with pytest.raises(SchemaTooNew):
        SqliteStore(tmp_path / "r.db")


async def test_sigkill_during_write_burst_loses_no_acknowledged_write(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.registry",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path),
        "--log-json",
        "false",
        "--log-level",
        "WARNING",
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    acknowledged: dict[int, str] = {}
    enough = asyncio.Event()
    try:
        await wait_serving(address, timeout=20, process=process)
        async with signed_channel(address, tmp_path, "registry", caller=ADMIN) as channel:
            client = RegistryClient(registry_pb2_grpc.ModelRegistryServiceStub(channel))
            await client.model("m")

            async def writer(worker: int) -> None:
                for i in range(1000):
                    data = f"{worker}-{i}".encode() * 512
                    try:
                        version = await client.version("m", data)
                    except (grpc.aio.AioRpcError, asyncio.CancelledError):
                        # The server died under us; a client-streaming upload cut
                        # off mid-stream surfaces as CancelledError in grpc.aio.
                        return
                    acknowledged[version.version] = version.artifact_digest
                    if len(acknowledged) >= 40:
                        enough.set()

            tasks = [asyncio.create_task(writer(w)) for w in range(6)]
            await asyncio.wait_for(enough.wait(), timeout=60)
            process.send_signal(signal.SIGKILL)
            await asyncio.gather(*tasks)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()

    server = await build_server(settings_for(tmp_path))
    await server.start()
    try:
        async with caller_channel(server) as channel:
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            model = (await stub.GetModel(registry_pb2.GetModelRequest(name="m"))).model
            listed = await stub.ListVersions(
                registry_pb2.ListVersionsRequest(model_name="m", page_size=1000)
            )
            numbers = sorted(v.version for v in listed.versions)
            assert numbers == list(range(1, model.latest_version + 1))  # no gaps, no halves
            stored = {v.version: v.artifact_digest for v in listed.versions}
            for number, digest in acknowledged.items():
                assert stored.get(number) == digest, f"acknowledged version {number} lost"
            artifacts = tmp_path / "registry" / "artifacts"
            for version in listed.versions:
                assert version.format == common_pb2.ARTIFACT_FORMAT_TRANSFORMERS
                blob = artifacts / "sha256" / version.artifact_digest[:2] / version.artifact_digest
                assert hashlib.sha256(blob.read_bytes()).hexdigest() == version.artifact_digest
            assert not any((artifacts / "tmp").iterdir())  # cut-short uploads were dropped
            assert len(acknowledged) >= 40
            # And the registry keeps working on the recovered database.
            client = RegistryClient(stub)
            assert (await client.version("m", os.urandom(64))).version == model.latest_version + 1
    finally:
        await server.stop(0)
