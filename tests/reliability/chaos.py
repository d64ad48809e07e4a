"""A suite for chaos tests: registry and gateway in this process, inference as a child
process that tests can SIGKILL, SIGSTOP and restart on the same port.

A background event loop hosts the in-process servers (like `tests.sdk.real_stack`),
so the tests drive them with the plain sync SDK and grpc clients; a `Load` thread
sends unary Generate calls through the gateway and records when each failed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import lattice
from lattice.tokens import ALL_SCOPES, mint_dev_token
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.gateway.server import GatewaySettings
from services.gateway.server import build_server as build_gateway
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime import LatticeServer
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.suite.ports import free_port
from tests.support.identity import ADMIN, internal_token

SECRET = "chaos-test-dev-secret-0123456789abcdef"
READY = inference_pb2.LOADED_MODEL_STATE_READY


class ChaosSuite:
    def __init__(self, root: Path, **gateway_settings) -> None:
        self.root = root
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.servers: dict[str, LatticeServer] = {}
        self.token = mint_dev_token(SECRET, tenant="acme", scopes=ALL_SCOPES, subject="chaos")
        self.inference_port = free_port()
        self.inference_address = f"127.0.0.1:{self.inference_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._gateway_settings = gateway_settings

    def run(self, coroutine, timeout: float = 60):
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=timeout)

    async def _start(self) -> None:
        common = {"data_dir": self.root, "log_json": False, "grace_seconds": 0.5}
        registry = await build_registry(RegistrySettings(port=0, **common))
        await registry.start()
        self.servers["registry"] = registry
        gateway = await build_gateway(
            GatewaySettings(
                port=0,
                **common,
                registry_address=registry.address,
                inference_addresses=(self.inference_address,),
                dev_jwt_secret=SECRET,
                **self._gateway_settings,
            )
        )
        await gateway.start()
        self.servers["gateway"] = gateway

    async def _restart_registry(self, down_for: float) -> None:
        old = self.servers["registry"]
        await old.stop(0)
        await asyncio.sleep(down_for)
        settings = RegistrySettings(
            port=old.port, data_dir=self.root, log_json=False, grace_seconds=0.5
        )
        registry = await build_registry(settings)
        await registry.start()
        self.servers["registry"] = registry

    def restart_registry(self, down_for: float = 1.0) -> None:
        """Stop the registry, leave it down `down_for` seconds, start it on the same port
        and data (a crash and restart, as far as its clients can tell)."""
        self.run(self._restart_registry(down_for))

    def start(self) -> ChaosSuite:
        self._thread.start()
        self.run(self._start())
        return self

    @property
    def gateway(self) -> str:
        return self.servers["gateway"].address

    @property
    def registry(self) -> str:
        return self.servers["registry"].address

    # -- inference, a child process ----------------------------------------------------

    def start_inference(self) -> None:
        log = open(self.root / "inference.log", "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.inference",
                "--port",
                str(self.inference_port),
                "--registry-address",
                self.registry,
                "--data-dir",
                str(self.root / "inference"),
                "--device",
                "cpu",
                "--backend-threads",
                "1",
                "--grace-seconds",
                "0.5",
                # One suite, one key ring: the in-process registry's and gateway's.
                "--key-ring-file",
                str(self.root / DEFAULT_KEY_RING_PATH),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LATTICE_LOG_JSON": "false"},
        )
        log.close()

    def signal_inference(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        if sig == signal.SIGKILL:
            self.process.wait(10)

    def wait_inference_serving(self, timeout: float = 120) -> float:
        """Wait until the child says SERVING; returns when (time.monotonic())."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.inference_address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process is not None and self.process.poll() is None, (
                    "inference exited: " + self.log_tail()
                )
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return time.monotonic()
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "inference never served: " + self.log_tail()
                time.sleep(0.1)

    def loaded(self) -> dict[tuple[str, int], int]:
        with grpc.insecure_channel(self.inference_address) as channel:
            token = internal_token(self.root, "inference", ADMIN)
            answer = inference_pb2_grpc.InferenceServiceStub(channel).ListLoadedModels(
                inference_pb2.ListLoadedModelsRequest(),
                timeout=5,
                metadata=[("authorization", f"Bearer {token}")],
            )
        return {(m.model_name, m.version): m.state for m in answer.models}

    def log_tail(self) -> str:
        path = self.root / "inference.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- lifecycle --------------------------------------------------------------------

    def client(self) -> lattice.Client:
        return lattice.Client(self.gateway, self.token)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

        async def _stop() -> None:
            for name in ("gateway", "registry"):
                if name in self.servers:
                    await self.servers[name].stop(0.2)

        try:
            self.run(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)


class Load(threading.Thread):
    """Unary Generate calls through the gateway, back to back, each one timed."""

    def __init__(self, gateway: str, token: str, model: str, timeout: float = 10) -> None:
        super().__init__(daemon=True)
        self._gateway = gateway
        self._metadata = [("authorization", f"Bearer {token}")]
        self._model = model
        self._timeout = timeout
        self._halt = threading.Event()
        #: (sent at, finished at, code name) per call.
        self.calls: list[tuple[float, float, str]] = []

    def run(self) -> None:
        request = inference_pb2.GenerateRequest(model=self._model, prompt="hello", skip_cache=True)
        request.parameters.max_new_tokens = 2
        with grpc.insecure_channel(self._gateway) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            while not self._halt.is_set():
                sent = time.monotonic()
                try:
                    stub.Generate(request, metadata=self._metadata, timeout=self._timeout)
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                self.calls.append((sent, time.monotonic(), code))

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def failed_outside(self, windows: list[tuple[float, float]]) -> list[tuple[float, str]]:
        """Failed calls that were not in flight during any (start, end) window."""
        return [
            (sent, code)
            for sent, finished, code in self.calls
            if code != "OK" and not any(sent <= end and finished >= start for start, end in windows)
        ]
