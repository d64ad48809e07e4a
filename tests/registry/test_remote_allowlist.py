"""Remote backends (triton://host:port, triton_address) must match the registry's
allowlist: anything else is INVALID_ARGUMENT at version creation, and nothing
ever connects to it."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from lattice.errors import InvalidArgument
from lattice.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.registry.server import build_server
from services.runtime.remote_targets import RemoteAllowlist
from tests.registry.conftest import settings_for
from tests.support.identity import signed_channel
from tests.support.listener import CountingListener

TRITON = common_pb2.ARTIFACT_FORMAT_TRITON


async def test_versions_naming_other_hosts_are_refused_and_never_dialled(tmp_path):
    server = await build_server(
        settings_for(tmp_path, remote_allowlist=("triton.gpu.internal:8001",))
    )
    await server.start()
    try:
        async with (
            CountingListener() as canary,
            signed_channel(server.address, tmp_path, "registry") as channel,
        ):
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            await stub.CreateModel(
                registry_pb2.CreateModelRequest(model=registry_pb2.Model(name="m", task=1))
            )
            attempts = [
                {"artifact_uri": f"triton://{canary.address}/m"},
                {"artifact_uri": f"triton://user@{canary.address}/m"},
                {"artifact_uri": "triton://triton.gpu.internal:9999/m"},
                {"artifact_uri": "triton://triton.gpu.internal/m"},
                {"artifact_uri": "http://169.254.169.254:80/latest", "artifact_digest": "a" * 64},
                {
                    "artifact_uri": "triton://triton.gpu.internal:8001/m",
                    "params": {"triton_address": canary.address},
                },
                {
                    "artifact_uri": "triton://triton.gpu.internal:8001/m",
                    "tags": {"triton_address": canary.address},
                },
            ]
            for fields in attempts:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.CreateVersion(
                        registry_pb2.CreateVersionRequest(model_name="m", format=TRITON, **fields)
                    )
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
                assert "allowlist" in refused.value.details() or "host:port" in (
                    refused.value.details()
                )
            allowed = await stub.CreateVersion(
                registry_pb2.CreateVersionRequest(
                    model_name="m",
                    format=TRITON,
                    artifact_uri="triton://Triton.GPU.internal:8001/m",
                )
            )
            assert allowed.version.version == 1  # only the refused ones left no trace
            await asyncio.sleep(0.2)
            assert canary.connections == 0
    finally:
        await server.stop(0)


def test_patterns_match_host_and_port_only():
    allow = RemoteAllowlist(["*.gpu.internal:8001", "127.0.0.1:*", "[::1]:8001"])
    assert allow.allows("a.gpu.internal:8001") and allow.allows("127.0.0.1:1")
    assert allow.allows("[::1]:8001")
    for address in (
        "a.gpu.internal:8002",
        "gpu.internal.evil.com:8001",
        "a.gpu.internal",
        "x@a.gpu.internal:8001",
        "a.gpu.internal:8001/path",
        "127.0.0.2:1",
        "",
    ):
        assert not allow.allows(address), address
    assert not RemoteAllowlist([]).allows("127.0.0.1:1")
    with pytest.raises(InvalidArgument):
        RemoteAllowlist([]).check_version("triton://127.0.0.1:1/m", {}, {})
    RemoteAllowlist([]).check_version("lattice-artifact://sha256/" + "a" * 64, {}, {})
