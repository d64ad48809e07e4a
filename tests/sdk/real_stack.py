"""The real services (registry, inference, trainer, gateway) in a background event loop.

A background loop lets the sync client, the async client (on the test's own
loop), CLI subprocesses and the Node.js client all call the same servers.
A tiny GPT-2-style model, built from a config (nothing downloaded), is
registered and put online through the gateway with the SDK itself.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import lattice
from lattice.tokens import ALL_SCOPES, TENANT_SCOPES, mint_dev_token
from services.runtime import LatticeServer
from services.runtime.identity import Caller
from tests.support.identity import internal_token

#: Who direct calls to the stack's internal services act as.
STACK_ADMIN = Caller("acme", "stack-admin", frozenset({"admin"}))
SECRET = "sdk-test-dev-secret-0123456789abcdef"
MODEL = "tiny-gpt"
ENCODER = "tiny-enc"


class RealStack:
    def __init__(self, root: Path, *, http: bool = False) -> None:
        self.root = root
        #: Give each gateway its HTTP front on a free port as well.
        self.http_port = 0 if http else -1
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: dict[str, LatticeServer] = {}
        self.token = mint_dev_token(SECRET, tenant="acme", scopes=TENANT_SCOPES, subject="sdk-test")
        #: The same tenant with the admin scope (policies, what a replica loaded).
        self.admin_token = mint_dev_token(
            SECRET, tenant="acme", scopes=ALL_SCOPES, subject="sdk-admin"
        )

    def token_for(self, address: str) -> str:
        """The bearer a service at `address` accepts: the user's JWT at a gateway, an
        internal token (an admin of tenant acme, signed with the suite's key ring) at
        an internal service, as a suite service would call it."""
        for name in ("registry", "inference", "trainer"):
            server = self.servers.get(name)
            if server is not None and server.address == address:
                return internal_token(self.root, name, STACK_ADMIN)
        return self.token

    def run(self, coroutine, timeout: float = 60) -> object:
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=timeout)

    async def _start(self) -> None:
        from services.gateway.server import GatewaySettings
        from services.gateway.server import build_server as build_gateway
        from services.inference.server import InferenceSettings
        from services.inference.server import build_server as build_inference
        from services.registry.server import RegistrySettings
        from services.registry.server import build_server as build_registry
        from services.trainer.server import TrainerSettings
        from services.trainer.server import build_server as build_trainer

        common: dict[str, Any] = {
            "port": 0,
            "data_dir": self.root,
            "log_json": False,
            "grace_seconds": 0.5,
        }
        registry = await build_registry(RegistrySettings(**common))
        await registry.start()
        self.servers["registry"] = registry
        inference = await build_inference(
            InferenceSettings(
                **common, registry_address=registry.address, device="cpu", backend_threads=2
            )
        )
        await inference.start()
        self.servers["inference"] = inference
        trainer = await build_trainer(
            TrainerSettings(
                **common,
                registry_address=registry.address,
                poll_interval_seconds=0.1,
                cancel_grace_seconds=3.0,
            )
        )
        await trainer.start()
        self.servers["trainer"] = trainer
        gateway = await build_gateway(
            GatewaySettings(
                **common,
                registry_address=registry.address,
                inference_addresses=(inference.address,),
                trainer_address=trainer.address,
                dev_jwt_secret=SECRET,
                http_port=self.http_port,
            )
        )
        await gateway.start()
        self.servers["gateway"] = gateway
        # A second gateway over the same services with a one-request quota (no Redis:
        # per-replica limits), to see RESOURCE_EXHAUSTED with its retry time.
        limited = await build_gateway(
            GatewaySettings(
                **common,
                registry_address=registry.address,
                inference_addresses=(inference.address,),
                trainer_address=trainer.address,
                dev_jwt_secret=SECRET,
                http_port=self.http_port,
                quota_requests=1,
                quota_window_seconds=600,
            )
        )
        await limited.start()
        self.servers["limited"] = limited

    def start(self) -> RealStack:
        self._thread.start()
        self.run(self._start())
        return self

    @property
    def gateway(self) -> str:
        return self.servers["gateway"].address

    def address(self, name: str) -> str:
        return self.servers[name].address

    def deploy_tiny_model(
        self, model_dir: Path, name: str = MODEL, task: str = "text-generation"
    ) -> None:
        """Register `model_dir` as version 1 through the gateway and wait until it serves."""
        with lattice.Client(self.gateway, self.token) as client:
            client.create_model(name, task)
            client.register_version(name, model_dir)
        self.serve(name, 1, task)

    def serve(self, name: str, version: int = 1, task: str = "text-generation") -> None:
        """Route all of `name`'s traffic to `version` through the gateway and wait until
        the inference service answers for it (a trained version, or one just registered)."""
        with lattice.Client(self.gateway, self.token) as client:
            client.deploy(name, {version: 100}, reason="test")
            deadline = time.monotonic() + 60
            while True:
                try:
                    if task == "embedding":
                        client.embed(name, ["warm up"], skip_cache=True)
                    elif task == "classification":
                        client.classify(name, "warm up", skip_cache=True)
                    else:
                        client.generate(name, "warm up", max_new_tokens=1, skip_cache=True)
                    return
                except (lattice.FailedPrecondition, lattice.Unavailable, lattice.NotFound):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def stop(self) -> None:
        async def _stop() -> None:
            for name in ("limited", "gateway", "trainer", "inference", "registry"):
                if name in self.servers:
                    await self.servers[name].stop(0.5)

        try:
            self.run(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


def running_stack(
    root: Path,
    model_dir: Path | None = None,
    encoder_dir: Path | None = None,
    *,
    http: bool = False,
) -> Iterator[RealStack]:
    """The stack, with the tiny models given online; stopped when the caller is done."""
    stack = RealStack(root, http=http).start()
    try:
        if model_dir is not None:
            stack.deploy_tiny_model(model_dir)
        if encoder_dir is not None:
            stack.deploy_tiny_model(encoder_dir, ENCODER, "embedding")
        yield stack
    finally:
        stack.stop()
