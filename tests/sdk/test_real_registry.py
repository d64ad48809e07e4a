"""The SDK's registry calls against the real registry service (SQLite, artifact store)."""

from __future__ import annotations

import asyncio

import pytest

import lattice
from lattice.v1 import registry_pb2
from services.registry.server import RegistrySettings, build_server
from tests.support.identity import ADMIN, internal_token


@pytest.fixture
async def registry(tmp_path):
    server = await build_server(RegistrySettings(port=0, data_dir=tmp_path, log_json=False))
    await server.start()
    yield server
    await server.stop(0)


async def test_sdk_drives_the_real_registry(registry, tmp_path):
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "gpt2"}')
    (source / "model.safetensors").write_bytes(b"\0" * 4096)
    async with lattice.AsyncClient(
        registry.address, internal_token(tmp_path, "registry", ADMIN)
    ) as client:
        model = await client.create_model("real-gpt", "text-generation", labels={"team": "ml"})
        assert model.name == "real-gpt"
        first = await client.register_version("real-gpt", source, metrics={"val_loss": 3.0})
        second = await client.register_version("real-gpt", source)
        assert (first.version, second.version) == (1, 2)
        assert first.artifact_digest == second.artifact_digest  # content-addressed
        data = await client.download_artifact(first.artifact_uri, tmp_path / "back")
        assert (tmp_path / "back" / "model.safetensors").read_bytes() == b"\0" * 4096
        assert len(data) == first.artifact_size_bytes

        await client.set_alias("real-gpt", "champion", 1)
        assert (await client.resolve("real-gpt@champion")).version.version == 1
        deployment = await client.deploy("real-gpt", {1: 90, 2: 10}, reason="canary")
        assert [(r.version, r.weight) for r in deployment.routes] == [(1, 90), (2, 10)]
        await client.deploy("real-gpt", {1: 100}, reason="rollback")
        assert [e.reason for e in await client.history("real-gpt")][:2] == ["rollback", "canary"]
        await client.set_policy("real-gpt", max_new_tokens=16)
        assert (await client.get_policy("real-gpt")).max_new_tokens == 16
        archived = await client.set_version_status("real-gpt", 2, "archived")
        assert archived.status == registry_pb2.VERSION_STATUS_ARCHIVED

        events = []
        async with client.watch(model_names=["real-gpt"]) as stream:
            async for event in stream:
                events.append(event)
                if event.type == registry_pb2.WATCH_EVENT_TYPE_SYNCED:
                    break
        assert any(e.WhichOneof("object") == "deployment" for e in events)

        with pytest.raises(lattice.AlreadyExists):
            await client.create_model("real-gpt")
        with pytest.raises(lattice.InvalidArgument) as invalid:
            await client.create_model("Not A DNS Label")
        assert invalid.value.field
        with pytest.raises(lattice.InvalidArgument):
            await client.deploy("real-gpt", {1: 50})
        with pytest.raises(lattice.FailedPrecondition):
            await client.set_version_status("real-gpt", 1, "archived")  # online
        with pytest.raises(lattice.NotFound):
            await client.get_version("real-gpt", 9)


async def test_sync_client_against_the_real_registry(registry, tmp_path):
    source = tmp_path / "m"
    source.mkdir()
    (source / "config.json").write_text("{}")

    def work() -> None:
        with lattice.Client(
            registry.address, internal_token(tmp_path, "registry", ADMIN)
        ) as client:
            client.create_model("sync-real", "embedding", description="encoder")
            assert client.get_model("sync-real").description == "encoder"
            assert "sync-real" in [m.name for m in client.list_models()]
            version = client.register_version("sync-real", source)
            assert client.get_version("sync-real", 1).artifact_digest == version.artifact_digest
            assert [v.version for v in client.list_versions("sync-real")] == [1]
            client.set_alias("sync-real", "prod", 1)
            assert [a.alias for a in client.list_aliases("sync-real")] == ["prod"]
            client.delete_alias("sync-real", "prod")
            client.deploy("sync-real", {1: 100})
            assert client.get_deployment("sync-real").routes[0].version == 1
            assert "sync-real" in [d.model_name for d in client.list_deployments()]
            with pytest.raises(lattice.FailedPrecondition):
                client.delete_model("sync-real")
            client.deploy("sync-real", {})
            assert client.set_version_status("sync-real", 1, "archived").status == 2
            assert client.set_version_status("sync-real", 1, "ready").status == 1
            client.delete_model("sync-real")
            with pytest.raises(lattice.NotFound):
                client.get_model("sync-real")

    await asyncio.to_thread(work)
