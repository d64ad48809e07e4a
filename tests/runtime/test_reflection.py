"""Server reflection answers under v1 (current grpcurl) and v1alpha (older clients)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection_pb2

from services.runtime.reflection import V1_SERVICE, V1ALPHA_SERVICE

GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def _grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def _list_services(address: str, service: str) -> set[str]:
    """ListServices over one reflection version, with raw bytes on the wire."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(iter([request]))
        responses = [response async for response in call]
    return {s.name for s in responses[0].list_services_response.service}


async def test_both_versions_list_the_same_services(probe_server):
    v1 = await _list_services(probe_server.address, V1_SERVICE)
    v1alpha = await _list_services(probe_server.address, V1ALPHA_SERVICE)
    assert v1 == v1alpha
    assert {"lattice.v1.InferenceService", "grpc.health.v1.Health", V1_SERVICE} <= v1


async def test_grpcurl_lists_and_describes_over_reflection(probe_server):
    """grpcurl asks v1 first. The server runs on this test's loop: grpcurl runs in a thread."""
    address = probe_server.address
    listed = set((await asyncio.to_thread(_grpcurl, address, "list")).split())
    assert {"lattice.v1.InferenceService", V1_SERVICE, V1ALPHA_SERVICE} <= listed
    described = await asyncio.to_thread(_grpcurl, address, "describe", V1_SERVICE)
    assert "rpc ServerReflectionInfo" in described
    inference = "lattice.v1.InferenceService"
    assert "rpc Generate" in await asyncio.to_thread(_grpcurl, address, "describe", inference)
