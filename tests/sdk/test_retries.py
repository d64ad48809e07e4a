"""UNAVAILABLE is retried by gRPC's service config for reads, never for writes."""

from __future__ import annotations

import pytest

import lattice
from lattice.errors import Unavailable
from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.runtime import LatticeServer, ServerSettings, Service


class Flaky(registry_pb2_grpc.ModelRegistryServiceServicer):
    """Fails the first `failures` calls of each method with UNAVAILABLE."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

    def _count(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.calls[method] <= self.failures:
            raise Unavailable("backend restarting")

    async def GetModel(self, request, context):
        self._count("GetModel")
        return registry_pb2.GetModelResponse(model=registry_pb2.Model(name=request.name))

    async def CreateModel(self, request, context):
        self._count("CreateModel")
        return registry_pb2.CreateModelResponse(model=request.model)


@pytest.fixture
async def flaky():
    servicer = Flaky(failures=2)
    server = LatticeServer(
        [
            Service(
                servicer,
                registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
                registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"],
            )
        ],
        ServerSettings(port=0, log_json=False),
    )
    await server.start()
    yield servicer, server.address
    await server.stop(0)


async def test_reads_are_retried_and_writes_are_not(flaky):
    servicer, address = flaky
    async with lattice.AsyncClient(address) as client:
        assert (await client.get_model("m")).name == "m"
        assert servicer.calls["GetModel"] == 3
        with pytest.raises(lattice.Unavailable, match="backend restarting"):
            await client.create_model("m")
        assert servicer.calls["CreateModel"] == 1


async def test_retries_can_be_turned_off(flaky):
    servicer, address = flaky
    async with lattice.AsyncClient(address, retries=1) as client:
        with pytest.raises(lattice.Unavailable):
            await client.get_model("m")
        assert servicer.calls["GetModel"] == 1
