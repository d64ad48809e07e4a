"""What an idle GenerateStream costs the gateway: RSS at 1k, 5k and 10k open streams.

Runs a real registry, a slow echo inference replica (it sends the first token,
then waits an hour before the next) and a real gateway, each its own process,
and from this process opens idle GenerateStream calls through the gateway in
steps up to `--streams` (limits raised for the bench: per tenant and per
connection). After each step, once every stream has its first token, it reads
the gateway's RSS and prints the cost per idle stream against the RSS with no
stream open (measured in the same run). "Flat" means that cost does not grow
with the count: the figure is the per-stream cost at the largest step over the
cost at the first (1.0 = linear, no per-stream growth), next to the raw
RSS(10k)/RSS(1k).

The baseline, in the same run: a bare grpc.aio proxy (a generic handler that
forwards the same bytes to the same echo replica, nothing else) given the same
streams. Its per-stream cost is what gRPC itself holds for one idle proxied
stream (a server call, a client call and their pending operations); the
gateway's cost over it is what the gateway adds.

    PYTHONPATH=$PWD .venv/bin/python bench/gateway_idle_streams.py [--streams 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from grpc import aio

from lattice.tokens import ALL_SCOPES, mint_dev_token
from lattice.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.suite.supervisor import wait_serving

SECRET = "idle-bench-dev-secret-0123456789abcdef"
CHANNELS = 20  # client connections the streams are spread over
#: The echo replica, run as its own process: first token at once, the next in an hour.
ECHO = """
import asyncio, sys
from services.suite.echo import start_echo
async def main():
    server, _ = await start_echo("slow", port=int(sys.argv[1]), stream_delay=3600.0)
    await asyncio.Event().wait()
asyncio.run(main())
"""


#: The baseline: a bare grpc.aio proxy to the echo replica, its own process.
PROXY = """
import asyncio, sys
import grpc
from grpc import aio
METHOD = "/lattice.v1.InferenceService/GenerateStream"
async def main():
    upstream = aio.insecure_channel(sys.argv[2]).unary_stream(METHOD)
    async def forward(request, context):
        async for message in upstream(request, metadata=context.invocation_metadata()):
            yield message
    handler = grpc.unary_stream_rpc_method_handler(forward)
    server = aio.server(options=[("grpc.max_concurrent_streams", 100000)])
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("lattice.v1.InferenceService",
                                              {"GenerateStream": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(service: str, port: int, data_dir: Path, *flags: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", f"services.{service}", "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "WARNING", *flags]
    return subprocess.Popen(argv, env={**os.environ, "LATTICE_ACCESS_LOG": "false"})


def start_echo(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", ECHO, str(port)])


def start_proxy(port: int, upstream: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", PROXY, str(port), upstream])


async def until_serving(address: str) -> None:
    """Wait up to a minute for the service at `address` to answer SERVING."""
    await wait_serving(address, time.monotonic() + 60)


async def seed(gateway: str) -> None:
    """Model "idle", version 1 online with all the traffic (through the gateway, as admin)."""
    token = mint_dev_token(SECRET, tenant="ops", scopes=ALL_SCOPES, subject="bench")
    auth = [("authorization", f"Bearer {token}")]
    async with aio.insecure_channel(gateway) as channel:
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        model = registry_pb2.Model(name="idle", task=common_pb2.MODEL_TASK_TEXT_GENERATION)
        await stub.CreateModel(registry_pb2.CreateModelRequest(model=model), metadata=auth)
        blob = b"idle bench version 1"
        digest = hashlib.sha256(blob).hexdigest()
        header = registry_pb2.ArtifactHeader(digest=digest, size_bytes=len(blob))
        upload = [
            registry_pb2.UploadArtifactRequest(header=header),
            registry_pb2.UploadArtifactRequest(chunk=blob),
        ]
        uploaded = await stub.UploadArtifact(iter(upload), metadata=auth)
        version = registry_pb2.CreateVersionRequest(
            model_name="idle",
            artifact_uri=uploaded.artifact_uri,
            artifact_digest=digest,
            format=common_pb2.ARTIFACT_FORMAT_TRANSFORMERS,
        )
        await stub.CreateVersion(version, metadata=auth)
        route = registry_pb2.Route(version=1, weight=100)
        deployment = registry_pb2.UpdateDeploymentRequest(model_name="idle", routes=[route])
        await stub.UpdateDeployment(deployment, metadata=auth)


class IdleStreams:
    """Opens GenerateStream calls that get one token and then wait."""

    def __init__(self, gateway: str) -> None:
        local = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [aio.insecure_channel(gateway, options=local) for _ in range(CHANNELS)]
        token = mint_dev_token(SECRET, tenant="acme", scopes=ALL_SCOPES, subject="idle")
        self.metadata = [("authorization", f"Bearer {token}")]
        self.calls: list[aio.UnaryStreamCall] = []
        self.errors: dict[str, int] = {}
        self.first_tokens = 0

    async def open(self, count: int) -> None:
        """Open `count` more streams; return once each has read its first token."""
        request = inference_pb2.GenerateStreamRequest(
            model="idle",
            prompt="an idle stream",
            skip_cache=True,
            parameters=inference_pb2.GenerationParameters(max_new_tokens=2),
        )

        async def one(index: int) -> None:
            stub = inference_pb2_grpc.InferenceServiceStub(self.channels[index % CHANNELS])
            call = stub.GenerateStream(request, metadata=self.metadata)
            self.calls.append(call)
            try:
                message = await call.read()
                if message is not aio.EOF:
                    self.first_tokens += 1
            except aio.AioRpcError as error:
                self.errors[error.code().name] = self.errors.get(error.code().name, 0) + 1

        start = len(self.calls)
        for batch in range(start, start + count, 500):  # in waves: no connect storm
            await asyncio.gather(*(one(i) for i in range(batch, min(start + count, batch + 500))))

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            await channel.close()


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


async def settled_rss(process: psutil.Process) -> float:
    """RSS once it stops moving (allocator and gRPC buffers settle after a burst)."""
    last = rss_mb(process)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = rss_mb(process)
        if abs(now - last) < 0.2:
            return now
        last = now
    return last


async def measure(
    name: str, address: str, process: psutil.Process, steps: list[int]
) -> list[tuple[int, float, float]]:
    """(streams, RSS MB, KiB per stream) at each step, through `address`."""
    streams = IdleStreams(address)
    try:
        await streams.open(50)  # warm-up: connections, first-call allocations
        for call in streams.calls:
            call.cancel()
        streams.calls.clear()
        streams.first_tokens = 0
        await asyncio.sleep(1.0)
        base = await settled_rss(process)
        print(f"{name}: no stream open, RSS {base:.1f} MB")
        rows: list[tuple[int, float, float]] = []
        for target in steps:
            await streams.open(target - len(streams.calls))
            rss = await settled_rss(process)
            per = (rss - base) * 1024 / target
            rows.append((target, rss, per))
            print(f"  {target:>6,} idle streams: RSS {rss:7.1f} MB, {per:5.1f} KiB per stream")
        if streams.errors:
            print(f"  errors: {streams.errors}")
        print(f"  first tokens read: {streams.first_tokens:,} of {len(streams.calls):,}")
        return rows
    finally:
        await streams.close()


async def main(steps: list[int]) -> None:
    root = Path(tempfile.mkdtemp(prefix="idle-streams-"))
    registry_port, echo_port, gateway_port = free_port(), free_port(), free_port()
    proxy_port = free_port()
    registry_address = f"127.0.0.1:{registry_port}"
    echo_address = f"127.0.0.1:{echo_port}"
    gateway_address = f"127.0.0.1:{gateway_port}"
    children = [start("registry", registry_port, root), start_echo(echo_port)]
    most = max(steps)
    children.append(
        start(
            "gateway",
            gateway_port,
            root,
            "--registry-address",
            registry_address,
            "--inference-addresses",
            echo_address,
            "--dev-jwt-secret",
            SECRET,
            "--replica-poll-seconds",
            "0",
            "--max-streams-per-tenant",
            str(most * 2),
            "--max-concurrent-streams",
            str(most),
            "--stream-idle-timeout-seconds",
            "3600",
        )
    )
    children.append(start_proxy(proxy_port, echo_address))
    try:
        await until_serving(registry_address)
        await until_serving(echo_address)
        await until_serving(gateway_address)
        await seed(gateway_address)
        await asyncio.sleep(1.0)  # the gateway's view sees the deployment
        started = time.monotonic()
        print(f"idle GenerateStream calls on a slow echo replica, {CHANNELS} client connections")
        gateway = await measure("gateway", gateway_address, psutil.Process(children[2].pid), steps)
        await asyncio.sleep(2.0)  # the echo replica lets go of the cancelled streams
        proxy = await measure(
            "baseline: bare grpc.aio proxy",
            f"127.0.0.1:{proxy_port}",
            psutil.Process(children[3].pid),
            steps,
        )
        first, last = gateway[0], gateway[-1]
        print(f"gateway RSS({last[0]:,})/RSS({first[0]:,}): {last[1] / first[1]:.2f}")
        print(
            f"gateway per-stream cost at {last[0]:,} / at {first[0]:,} "
            f"(normalised ratio, 1.00 = flat): {last[2] / first[2]:.2f}"
        )
        print(
            f"gateway per-stream cost / bare proxy's at {last[0]:,}: "
            f"{last[2]:.1f} / {proxy[-1][2]:.1f} KiB = {last[2] / proxy[-1][2]:.2f}"
        )
        print(f"({time.monotonic() - started:.0f}s)")
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=10_000, help="the largest step")
    args = parser.parse_args()
    top = args.streams
    asyncio.run(main(sorted({max(1, top // 10), max(1, top // 2), top})))
