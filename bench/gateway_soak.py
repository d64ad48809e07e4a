"""Gateway soak: many concurrent server streams for a while; errors and RSS growth.

Runs a real registry and a real gateway as their own processes and, from this
process, holds `--streams` concurrent Watch streams through the gateway for
`--seconds`: every stream is reopened after a random 5-15 s (open/close churn),
and a deployment change every second fans one event out to every stream. It
reports the errors seen (anything but our own cancels) and the gateway's RSS
after warm-up and at the end: the growth ratio is the figure (issue 21 asks
<= 1.10). With `--idle N` it then opens N more streams that stay idle (from
several tenants, under the per-tenant cap) and reports RSS per idle stream.

    PYTHONPATH=$PWD .venv/bin/python bench/gateway_soak.py [--streams 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from grpc import aio

from lattice.tokens import ALL_SCOPES, mint_dev_token
from lattice.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.suite.supervisor import wait_serving

SECRET = "soak-bench-dev-secret-0123456789abcdef"
CHANNELS = 20  # client connections the streams are spread over


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(service: str, port: int, data_dir: Path, *flags: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", f"services.{service}", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "WARNING", *flags]
    return subprocess.Popen(argv, env={**os.environ, "LATTICE_ACCESS_LOG": "false"})


async def until_serving(address: str) -> None:
    """Wait up to a minute for the service at `address` to answer SERVING."""
    await wait_serving(address, time.monotonic() + 60)


class Soak:
    def __init__(self, gateway: str) -> None:
        # A connection each (no shared subchannel): the gateway caps streams per
        # connection (--max-concurrent-streams), as a real fleet of clients would see.
        local = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [aio.insecure_channel(gateway, options=local) for _ in range(CHANNELS)]
        self.gateway = gateway
        self.errors: dict[str, int] = {}
        self.events = 0
        self.opened = 0
        #: The first few error messages, to say what went wrong.
        self.samples: list[str] = []
        #: Set once `opened` reaches `target`.
        self.target = 0
        self.reached = asyncio.Event()

    def token(self, tenant: str) -> list[tuple[str, str]]:
        value = mint_dev_token(SECRET, tenant=tenant, scopes=ALL_SCOPES, subject="soak")
        return [("authorization", f"Bearer {value}")]

    async def stream(self, index: int, until: float, metadata, churn: bool = True) -> None:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(self.channels[index % CHANNELS])
        while time.monotonic() < until:
            lifetime = random.uniform(5, 15) if churn else until - time.monotonic()
            call = stub.Watch(registry_pb2.WatchRequest(model_names=["soak"]), metadata=metadata)
            self.opened += 1
            if self.target and self.opened >= self.target:
                self.reached.set()
            ends = min(until, time.monotonic() + lifetime)
            try:
                while time.monotonic() < ends:
                    message = await asyncio.wait_for(call.read(), ends - time.monotonic())
                    if message is aio.EOF:
                        self._error("EOF")
                        break
                    self.events += 1
            except TimeoutError:
                pass
            except aio.AioRpcError as error:
                self._error(error.code().name)
                if len(self.samples) < 3:
                    self.samples.append(f"{error.code().name}: {error.details()}")
            finally:
                call.cancel()

    def _error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    async def changes(self, until: float, metadata: list[tuple[str, str]]) -> None:
        async with aio.insecure_channel(self.gateway) as channel:
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            weight = 0
            while time.monotonic() < until:
                weight = weight % 99 + 1
                await stub.UpdateDeployment(
                    registry_pb2.UpdateDeploymentRequest(
                        model_name="soak",
                        routes=[
                            registry_pb2.Route(version=1, weight=weight),
                            registry_pb2.Route(version=2, weight=100 - weight),
                        ],
                    ),
                    metadata=metadata,
                )
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def seed(gateway: str, metadata: list[tuple[str, str]]) -> None:
    """Model "soak" with two versions, created through the gateway by its tenant
    (the registry takes only signed calls from suite services)."""
    async with aio.insecure_channel(gateway) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        await stub.CreateModel(
            registry_pb2.CreateModelRequest(
                model=registry_pb2.Model(name="soak", task=common_pb2.MODEL_TASK_TEXT_GENERATION)
            ),
            metadata=metadata,
        )
        for blob in (b"soak version 1", b"soak version 2"):
            digest = hashlib.sha256(blob).hexdigest()
            header = registry_pb2.ArtifactHeader(digest=digest, size_bytes=len(blob))
            uploaded = await stub.UploadArtifact(
                iter(
                    [
                        registry_pb2.UploadArtifactRequest(header=header),
                        registry_pb2.UploadArtifactRequest(chunk=blob),
                    ]
                ),
                metadata=metadata,
            )
            await stub.CreateVersion(
                registry_pb2.CreateVersionRequest(
                    model_name="soak",
                    artifact_uri=uploaded.artifact_uri,
                    artifact_digest=digest,
                    format=common_pb2.ARTIFACT_FORMAT_TRANSFORMERS,
                ),
                metadata=metadata,
            )


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


async def main(streams: int, seconds: float, idle: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    registry_port, gateway_port = free_port(), free_port()
    registry_address = f"127.0.0.1:{registry_port}"
    gateway_address = f"127.0.0.1:{gateway_port}"
    children = [start("registry", registry_port, root)]
    children.append(
        start(
            "gateway",
            gateway_port,
            root,
            "--registry-address",
            registry_address,
            "--inference-addresses",
            f"127.0.0.1:{free_port()}",  # no inference: only Watch streams here
            "--dev-jwt-secret",
            SECRET,
            "--replica-poll-seconds",
            "0",
        )
    )
    try:
        await until_serving(registry_address)
        await until_serving(gateway_address)
        gateway = psutil.Process(children[1].pid)
        soak = Soak(gateway_address)
        metadata = soak.token("acme")
        await seed(gateway_address, metadata)
        started = time.monotonic()
        until = started + seconds
        tasks = [asyncio.create_task(soak.stream(i, until, metadata)) for i in range(streams)]
        tasks.append(asyncio.create_task(soak.changes(until, metadata)))
        await asyncio.sleep(min(10.0, seconds / 3))
        warm = rss_mb(gateway)
        peak = warm
        while time.monotonic() < until:
            await asyncio.sleep(1.0)
            peak = max(peak, rss_mb(gateway))
        await asyncio.gather(*tasks)
        await asyncio.sleep(1.0)
        end = rss_mb(gateway)
        print(f"gateway soak: {streams} concurrent Watch streams for {seconds:.0f}s")
        print(f"  streams opened (with churn): {soak.opened:,}; events delivered: {soak.events:,}")
        print(f"  errors: {sum(soak.errors.values())} {soak.errors or ''}")
        for sample in soak.samples:
            print(f"    e.g. {sample}")
        print(f"  gateway RSS: {warm:.1f} MB after warm-up, peak {peak:.1f}, end {end:.1f} MB")
        print(f"  RSS growth ratio end/warm-up: {end / warm:.3f} (target <= 1.10)")
        if idle:
            before = rss_mb(gateway)
            tenants = [soak.token(f"idle-{i}") for i in range(idle // 1000 + 1)]
            hold = time.monotonic() + 3600
            soak.target = soak.opened + idle
            idle_tasks = [
                asyncio.create_task(soak.stream(i, hold, tenants[i // 1000], churn=False))
                for i in range(idle)
            ]
            await soak.reached.wait()
            await asyncio.sleep(3.0)
            after = rss_mb(gateway)
            per_stream = (after - before) * 1024 / idle
            print(f"  {idle:,} idle streams: RSS {before:.1f} -> {after:.1f} MB")
            print(f"  ({per_stream:.1f} KB per idle stream; the per-tenant cap bounds the total)")
            for task in idle_tasks:
                task.cancel()
            await asyncio.gather(*idle_tasks, return_exceptions=True)
        await soak.close()
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--idle", type=int, default=0, help="then hold this many idle streams")
    args = parser.parse_args()
    asyncio.run(main(args.streams, args.seconds, args.idle))
