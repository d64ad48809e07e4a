"""A real registry and a real inference server in this process, and helpers
to register tiny models as real artifacts and move deployments: what tests and
benchmarks of the inference service stand on."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from grpc import aio

from lattice.artifacts import CONTENT_TYPE, iter_chunks, pack_directory, sha256_hex
from lattice.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.inference.server import InferenceSettings
from services.inference.server import build_server as build_inference
from services.inference.serving import VersionState
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime import LatticeServer
from services.runtime.identity import Caller
from services.suite.signing import signed_channel

GENERATION = common_pb2.MODEL_TASK_TEXT_GENERATION
EMBEDDING = common_pb2.MODEL_TASK_EMBEDDING


def _started(server: LatticeServer | None) -> LatticeServer:
    if server is None:
        raise RuntimeError("the lab is not started")
    return server


#: Who the lab's own calls act as: an operator of tenant "acme" with admin rights.
OPERATOR = Caller("acme", "lab-operator", frozenset({"admin"}))


@dataclasses.dataclass
class Registered:
    name: str
    version: int
    digest: str


class Lab:
    """Registry + inference on loopback port 0, with clients for both."""

    def __init__(self, root: Path, *, tracer_provider=None, **inference_settings) -> None:
        self.root = root
        self._tracer_provider = tracer_provider
        self._inference_settings = inference_settings
        self.registry: LatticeServer | None = None
        self.inference: LatticeServer | None = None
        self._channels: list[aio.Channel] = []

    async def start(self) -> Lab:
        self.registry = await build_registry(
            RegistrySettings(
                port=0,
                data_dir=self.root,
                grace_seconds=0.2,
                log_json=False,
                remote_allowlist=("127.0.0.1:*",),
            )
        )
        await self.registry.start()
        reg_channel = signed_channel(self.registry.address, self.root, "registry", caller=OPERATOR)
        self._channels.append(reg_channel)
        self.reg = registry_pb2_grpc.ModelRegistryServiceStub(reg_channel)
        await self.start_inference()
        return self

    async def start_inference(self) -> None:
        values = {
            "port": 0,
            "data_dir": self.root,
            "grace_seconds": 1.0,
            "log_json": False,
            "registry_address": _started(self.registry).address,
            "device": "cpu",
            "backend_threads": 2,
            "remote_allowlist": ("127.0.0.1:*",),
            **self._inference_settings,
        }
        self.inference = await build_inference(
            InferenceSettings(**values), tracer_provider=self._tracer_provider
        )
        await self.inference.start()
        channel = signed_channel(self.inference.address, self.root, "inference", caller=OPERATOR)
        self._channels.append(channel)
        self.stub = inference_pb2_grpc.InferenceServiceStub(channel)

    async def stop(self) -> None:
        for channel in self._channels:
            await channel.close()
        if self.inference is not None:
            await self.inference.stop(0.5)
        if self.registry is not None:
            await self.registry.stop(0)

    # -- the inference side ---------------------------------------------------

    @property
    def servicer(self):
        return _started(self.inference).services[0].servicer

    @property
    def manager(self):
        return self.servicer.manager

    def entry(self, name: str, version: int):
        return next(
            (e for e in self.manager.versions() if (e.name, e.version) == (name, version)), None
        )

    def backend(self, name: str, version: int):
        return self.entry(name, version).backend

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = _started(self.inference).metrics_registry.get_sample_value(name, labels or {})
        return value or 0.0

    async def wait_state(
        self, name: str, version: int, state: VersionState, timeout: float = 30.0
    ) -> None:
        def reached() -> bool:
            entry = self.entry(name, version)
            return entry is not None and entry.state is state

        await self.manager.wait_for(reached, timeout)

    async def wait_unloaded(self, name: str, version: int, timeout: float = 30.0) -> None:
        await self.manager.wait_for(lambda: self.entry(name, version) is None, timeout)

    # -- the registry side ------------------------------------------------------

    async def create_model(self, name: str, task: common_pb2.ModelTask = GENERATION) -> None:
        await self.reg.CreateModel(
            registry_pb2.CreateModelRequest(model=registry_pb2.Model(name=name, task=task))
        )

    async def upload(self, data: bytes) -> tuple[str, str]:
        digest = sha256_hex(data)

        async def messages():
            yield registry_pb2.UploadArtifactRequest(
                header=registry_pb2.ArtifactHeader(
                    digest=digest, size_bytes=len(data), content_type=CONTENT_TYPE
                )
            )
            for chunk in iter_chunks(data):
                yield registry_pb2.UploadArtifactRequest(chunk=chunk)

        response = await self.reg.UploadArtifact(messages())
        return response.artifact_uri, digest

    async def register(
        self,
        name: str,
        directory: Path,
        fmt: common_pb2.ArtifactFormat = common_pb2.ARTIFACT_FORMAT_TRANSFORMERS,
    ) -> Registered:
        uri, digest = await self.upload(pack_directory(directory))
        response = await self.reg.CreateVersion(
            registry_pb2.CreateVersionRequest(
                model_name=name,
                artifact_uri=uri,
                artifact_digest=digest,
                format=fmt,
            )
        )
        return Registered(name, response.version.version, digest)

    async def deploy(self, name: str, routes: dict[int, int], shadow: int = 0) -> None:
        await self.reg.UpdateDeployment(
            registry_pb2.UpdateDeploymentRequest(
                model_name=name,
                routes=[registry_pb2.Route(version=v, weight=w) for v, w in routes.items()],
                shadow_version=shadow,
            )
        )

    async def set_policy(self, name: str, **fields) -> None:
        await self.reg.SetPolicy(
            registry_pb2.SetPolicyRequest(
                policy=registry_pb2.ModelPolicy(model_name=name, **fields)
            )
        )

    async def wait_policy(self, name: str, **fields) -> None:
        view = self.manager.view

        async def _poll() -> None:
            while True:
                policy = view.policy(name)
                if policy is not None and all(getattr(policy, k) == v for k, v in fields.items()):
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(_poll(), 10)

    def tampered_blob(self, digest: str) -> Path:
        """The registry's stored file for `digest` (tests corrupt it on purpose)."""
        return self.root / "registry" / "artifacts" / "sha256" / digest[:2] / digest


async def poll(predicate, timeout: float, interval: float = 0.001) -> float:
    """Wait until `predicate()` is true; returns the seconds it took. Polls
    (instead of an event) because the condition lives in a worker thread."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(int(timeout / interval) + 1):
        if predicate():
            return loop.time() - start
        await asyncio.sleep(interval)
    raise TimeoutError(f"condition not reached within {timeout}s")


def generate_request(model: str, prompt: str = "Once upon a time", **params) -> object:
    skip_cache = params.pop("skip_cache", False)
    routing_key = params.pop("routing_key", "")
    return inference_pb2.GenerateRequest(
        model=model,
        prompt=prompt,
        parameters=inference_pb2.GenerationParameters(**params),
        skip_cache=skip_cache,
        routing_key=routing_key,
    )


async def deploy_lm(lab: Lab, model_dirs: dict[str, Path], name: str = "lm") -> None:
    """Register model_dirs["lm1"] as version 1 of `name`, put it online, wait until READY."""
    await lab.create_model(name)
    await lab.register(name, model_dirs["lm1"])
    await lab.deploy(name, {1: 100})
    await lab.wait_state(name, 1, VersionState.READY)


async def deploy_encoder(lab: Lab, model_dirs: dict[str, Path], name: str = "enc") -> None:
    """Register model_dirs["enc"] as version 1 of embedding model `name`, online and READY."""
    await lab.create_model(name, EMBEDDING)
    await lab.register(name, model_dirs["enc"])
    await lab.deploy(name, {1: 100})
    await lab.wait_state(name, 1, VersionState.READY)
