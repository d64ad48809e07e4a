"""Real servers for gateway tests: a registry, inference replicas and gateways on port 0.

`EchoInference` (services.suite.echo) is a small, real gRPC InferenceService (not a mock): it
answers Generate/Embed/GenerateStream deterministically, with usage, and
records what reached it (metadata, remaining deadline) so tests can check
what the gateway forwarded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc import aio

from lattice.tokens import mint_dev_token
from lattice.v1 import (
    common_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.gateway.server import GatewaySettings, build_server
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime import LatticeServer
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.suite.echo import EchoInference, start_echo
from tests.support.identity import ADMIN, caller_channel

SECRET = "test-dev-secret-0123456789abcdef-0123"
TRITON = common_pb2.ARTIFACT_FORMAT_TRITON
ALL = ("inference:invoke", "registry:read", "registry:write", "trainer:read", "trainer:submit")


def token(tenant: str = "acme", scopes=("inference:invoke",), **kwargs: Any) -> str:
    return mint_dev_token(SECRET, tenant=tenant, scopes=scopes, **kwargs)


def bearer(value: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {value}")]


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": "lattice",
        "aud": "lattice",
        "sub": "u1",
        "tenant": "acme",
        "scope": "inference:invoke",
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@dataclasses.dataclass
class SigningKeys:
    """An RSA and an EC key pair, and a JWKS file publishing their public halves."""

    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    jwks_path: Path

    @classmethod
    def create(cls, directory: Path) -> SigningKeys:
        keys = cls(
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            ec.generate_private_key(ec.SECP256R1()),
            directory / "jwks.json",
        )
        keys.publish("rsa-1", "ec-1")
        return keys

    def jwk(self, kid: str) -> dict[str, Any]:
        if kid.startswith("rsa"):
            data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key()))
            data["alg"] = "RS256"
        else:
            data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key()))
            data["alg"] = "ES256"
        data.update(kid=kid, use="sig")
        return data

    def publish(self, *kids: str) -> None:
        self.jwks_path.write_text(json.dumps({"keys": [self.jwk(k) for k in kids]}))

    def sign(self, payload: dict[str, Any], kid: str = "rsa-1") -> str:
        if kid.startswith("rsa"):
            return jwt.encode(payload, self.rsa, algorithm="RS256", headers={"kid": kid})
        return jwt.encode(payload, self.ec, algorithm="ES256", headers={"kid": kid})


class Stack:
    """Registry + inference replicas + gateways, all real, all on loopback port 0."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.registry: LatticeServer | None = None
        self.inference: list[tuple[LatticeServer, EchoInference]] = []
        self.gateways: list[LatticeServer] = []
        #: Any other servers a test started (stopped after the gateways).
        self.others: list[LatticeServer] = []
        self.channels: list[aio.Channel] = []
        self.keys: SigningKeys | None = None

    @property
    def key_ring_file(self) -> str:
        """The one key ring every service of this stack reads (the registry's)."""
        return str(self.tmp / "reg" / DEFAULT_KEY_RING_PATH)

    async def start_registry(self) -> registry_pb2_grpc.ModelRegistryServiceStub:
        self.registry = await build_registry(
            RegistrySettings(
                port=0,
                data_dir=self.tmp / "reg",
                grace_seconds=0.1,
                log_json=False,
                remote_allowlist=("127.0.0.1:*",),
            )
        )
        await self.registry.start()
        # Seeding and inspecting the registry directly, as an administrator.
        channel = caller_channel(self.registry, ADMIN)
        self.channels.append(channel)
        self.registry_stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        return self.registry_stub

    async def model(
        self,
        name: str,
        versions: int,
        routes: list[tuple[int, int]],
        *,
        shadow: int = 0,
        tenants: tuple[str, ...] = (),
        owner: str = "",
    ) -> None:
        """Seed a model as the admin; `owner` names the tenant it belongs to (default: ops)."""
        stub = self.registry_stub
        await stub.CreateModel(
            registry_pb2.CreateModelRequest(
                model=registry_pb2.Model(
                    name=name, task=common_pb2.MODEL_TASK_TEXT_GENERATION, tenant=owner
                )
            )
        )
        for v in range(1, versions + 1):
            await stub.CreateVersion(
                registry_pb2.CreateVersionRequest(
                    model_name=name, artifact_uri=f"triton://127.0.0.1:1/{name}-{v}", format=TRITON
                )
            )
        if tenants:
            await stub.SetPolicy(
                registry_pb2.SetPolicyRequest(
                    policy=registry_pb2.ModelPolicy(model_name=name, allowed_tenants=tenants)
                )
            )
        await stub.UpdateDeployment(
            registry_pb2.UpdateDeploymentRequest(
                model_name=name,
                routes=[registry_pb2.Route(version=v, weight=w) for v, w in routes],
                shadow_version=shadow,
            )
        )

    async def start_inference(self, count: int = 1, **kwargs: Any) -> list[EchoInference]:
        for i in range(count):
            self.inference.append(await start_echo(f"replica{len(self.inference) + i}", **kwargs))
        return [servicer for _, servicer in self.inference]

    def settings(self, **overrides: Any) -> GatewaySettings:
        values: dict[str, Any] = {
            "port": 0,
            "log_json": False,
            "grace_seconds": 0.1,
            "registry_address": self.registry.address if self.registry else "127.0.0.1:1",
            "inference_addresses": tuple(s.address for s, _ in self.inference),
            "trainer_address": "127.0.0.1:1",
            "dev_jwt_secret": SECRET,
            "registry_sync_timeout": 5.0,
            "data_dir": self.tmp / "gateway",
            "key_ring_file": self.key_ring_file,
        }
        values.update(overrides)
        return GatewaySettings(**values)

    async def start_gateway(self, **overrides: Any) -> LatticeServer:
        gateway = await build_server(self.settings(**overrides))
        await gateway.start()
        self.gateways.append(gateway)
        return gateway

    def channel(self, address: str) -> aio.Channel:
        channel = aio.insecure_channel(address)
        self.channels.append(channel)
        return channel

    def inference_stub(self, gateway: LatticeServer) -> inference_pb2_grpc.InferenceServiceStub:
        return inference_pb2_grpc.InferenceServiceStub(self.channel(gateway.address))

    async def wait_view(self, gateway: LatticeServer, revision_at_least: int = 0) -> None:
        """Wait until the gateway's registry view has caught up with the registry."""
        view = gateway.gateway._router._view  # type: ignore[attr-defined]
        for _ in range(250):
            if view.revision >= revision_at_least:
                return
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        for server in [*self.gateways, *self.others]:
            await server.stop(0)
        for server, _ in self.inference:
            await server.stop(0)
        if self.registry is not None:
            await self.registry.stop(0)
