"""Registry, inference and trainer accept only authenticated callers.

The real services, built by their own `build_server` and run on port 0,
once over plaintext (the internal token alone must be required) and once
with the suite's mutual TLS from a development CA: direct calls without
credentials, with forged identity headers, with a token from another key
ring or for another service, and with a certificate from another CA are
all refused; the suite's own credentials pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.inference.server import InferenceSettings
from services.inference.server import build_server as build_inference
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime import LatticeServer
from services.runtime.identity import Caller
from services.runtime.internal_tokens import TokenMinter
from services.runtime.keys import LocalKeyRing
from services.runtime.pki import CertFiles, ensure_dev_pki
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer
from tests.support.certs import make_tls_files
from tests.support.identity import TEST_CALLER, internal_token, key_ring

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
FORGED = [
    ("x-lattice-tenant", "acme"),
    ("x-lattice-subject", "root"),
    ("x-lattice-scopes", "admin"),
]


@dataclasses.dataclass
class Suite:
    data_dir: Path
    servers: dict[str, LatticeServer]
    certs: dict[str, CertFiles]

    def address(self, name: str) -> str:
        return self.servers[name].address


def _tls(certs: dict[str, CertFiles], name: str) -> dict[str, str]:
    if not certs:
        return {}
    files = certs[name]
    return {
        "tls_cert_file": str(files.cert),
        "tls_key_file": str(files.key),
        "tls_client_ca_file": str(files.ca),
        "tls_ca_file": str(files.ca),
    }


async def _start(data_dir: Path, tls: bool) -> Suite:
    certs = ensure_dev_pki(data_dir, ["registry", "inference", "trainer", "client"]) if tls else {}
    common = {"port": 0, "data_dir": data_dir, "log_json": False, "grace_seconds": 0.1}
    servers: dict[str, LatticeServer] = {}
    servers["registry"] = await build_registry(
        RegistrySettings(**common, **_tls(certs, "registry"))
    )
    await servers["registry"].start()
    registry = servers["registry"].address
    servers["inference"] = await build_inference(
        InferenceSettings(
            **common, **_tls(certs, "inference"), registry_address=registry, device="cpu"
        )
    )
    await servers["inference"].start()
    servers["trainer"] = await build_trainer(
        TrainerSettings(**common, **_tls(certs, "trainer"), registry_address=registry)
    )
    await servers["trainer"].start()
    return Suite(data_dir, servers, certs)


@pytest.fixture(params=["plaintext", "mtls"])
async def suite(request, tmp_path) -> AsyncIterator[Suite]:
    started = await _start(tmp_path, request.param == "mtls")
    yield started
    for server in reversed(started.servers.values()):
        await server.stop(0)


def _credentials(suite: Suite, files: CertFiles | None = None) -> grpc.ChannelCredentials | None:
    if not suite.certs:
        return None
    files = files or suite.certs["client"]
    return grpc.ssl_channel_credentials(
        files.ca.read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
    )


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> aio.Channel:
    if credentials is None:
        return aio.insecure_channel(address)
    return aio.secure_channel(address, credentials)


async def _call(name: str, channel: aio.Channel, metadata) -> grpc.StatusCode:
    """One cheap RPC of service `name`; its status code."""
    try:
        if name == "registry":
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            await stub.ListModels(registry_pb2.ListModelsRequest(), metadata=metadata, timeout=5)
        elif name == "inference":
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            await stub.ListLoadedModels(
                inference_pb2.ListLoadedModelsRequest(), metadata=metadata, timeout=5
            )
        else:
            stub = trainer_pb2_grpc.TrainerServiceStub(channel)
            await stub.ListJobs(trainer_pb2.ListJobsRequest(), metadata=metadata, timeout=5)
    except aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.mark.parametrize("name", ["registry", "inference", "trainer"])
async def test_only_signed_callers_get_in(suite: Suite, name: str, tmp_path_factory) -> None:
    stranger = LocalKeyRing.open_or_create(tmp_path_factory.mktemp("other") / "ring.json")
    foreign = TokenMinter(stranger, audience=name, service=TEST_CALLER).token(TEST_CALLER)
    other_service = "trainer" if name != "trainer" else "registry"
    # A token that expired a minute ago.
    expired = TokenMinter(
        key_ring(suite.data_dir), audience=name, service=TEST_CALLER, lifetime=-60
    )
    async with _channel(suite.address(name), _credentials(suite)) as channel:
        assert await _call(name, channel, ()) == UNAUTHENTICATED
        assert await _call(name, channel, FORGED) == UNAUTHENTICATED
        assert await _call(name, channel, _bearer("not-a-jwt")) == UNAUTHENTICATED
        assert await _call(name, channel, _bearer(foreign)) == UNAUTHENTICATED
        wrong_audience = internal_token(suite.data_dir, other_service)
        assert await _call(name, channel, _bearer(wrong_audience)) == UNAUTHENTICATED
        stale = expired.token(Caller("acme", "late"))
        assert await _call(name, channel, _bearer(stale)) == UNAUTHENTICATED
        # The suite's own token passes; forged headers next to it change nothing.
        good = _bearer(internal_token(suite.data_dir, name))
        assert await _call(name, channel, good) == grpc.StatusCode.OK
        assert await _call(name, channel, [*good, *FORGED]) == grpc.StatusCode.OK
        # Health stays open to probes.
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert reply.status in (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )


@pytest.mark.parametrize("name", ["registry", "inference", "trainer"])
async def test_mtls_refuses_other_cas_and_plaintext(tmp_path, name: str) -> None:
    suite = await _start(tmp_path / "suite", tls=True)
    try:
        good = _bearer(internal_token(suite.data_dir, name))
        address = suite.address(name)
        other = make_tls_files(tmp_path / "other-ca")
        # A client certificate from another CA: the handshake fails.
        impostor = grpc.ssl_channel_credentials(
            suite.certs["client"].ca.read_bytes(),
            other.client_key.read_bytes(),
            other.client_cert.read_bytes(),
        )
        # No client certificate at all, and plaintext: refused too.
        anonymous = grpc.ssl_channel_credentials(suite.certs["client"].ca.read_bytes())
        for credentials in (impostor, anonymous, None):
            async with _channel(address, credentials) as channel:
                assert await _call(name, channel, good) == grpc.StatusCode.UNAVAILABLE
        async with _channel(address, _credentials(suite)) as channel:
            assert await _call(name, channel, good) == grpc.StatusCode.OK
    finally:
        for server in reversed(suite.servers.values()):
            await server.stop(0)


async def test_services_reach_each_other_over_mtls(tmp_path) -> None:
    """Inference's view of the registry syncs over mTLS with its own token."""
    suite = await _start(tmp_path, tls=True)
    try:
        async with _channel(suite.address("inference"), _credentials(suite)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for _ in range(100):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.05)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for server in reversed(suite.servers.values()):
            await server.stop(0)
