"""Registry fixtures: a real registry server on port 0 over a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc import aio

from lattice.v1 import registry_pb2_grpc
from services.registry.server import RegistrySettings, build_server
from services.runtime import LatticeServer
from tests.registry.support import RegistryClient
from tests.support.identity import caller_channel

#: Tests run their Triton (or a stand-in listener) on loopback.
LOOPBACK = ("127.0.0.1:*",)


def settings_for(data_dir: Path, **overrides) -> RegistrySettings:
    values = {
        "port": 0,
        "data_dir": data_dir,
        "grace_seconds": 0.2,
        "log_json": False,
        "remote_allowlist": LOOPBACK,
    }
    return RegistrySettings(**{**values, **overrides})


@pytest.fixture
async def registry_server(tmp_path) -> AsyncIterator[LatticeServer]:
    server = await build_server(settings_for(tmp_path))
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
async def channel(registry_server) -> AsyncIterator[aio.Channel]:
    async with caller_channel(registry_server) as chan:
        yield chan


@pytest.fixture
def stub(channel) -> registry_pb2_grpc.ModelRegistryServiceStub:
    return registry_pb2_grpc.ModelRegistryServiceStub(channel)


@pytest.fixture
def client(stub) -> RegistryClient:
    return RegistryClient(stub)
