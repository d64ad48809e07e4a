"""Latency and throughput the gateway hop adds, against calling inference directly.

Processes (each its own Python process, as deployed): a cheap InferenceService
(the tests' EchoInference on the shared runtime: a response that costs almost
nothing, to isolate the hop, as a cached response would), a real registry, and
a real gateway (`python -m services.gateway`, HS256 dev tokens with the verified
-token cache, default settings). Optionally a second gateway with Redis quotas.
The client runs in this process.

Figures: p50/p99 latency at concurrency 1 and 64, and requests/s at 64, for
direct vs via the gateway; "added" = gateway - direct; throughput as a ratio.

    .venv/bin/python bench/gateway_overhead.py [--requests 2000] [--rounds 5] [--no-quotas]

Paths are measured in interleaved rounds (direct, bare proxy, gateway, ...
then again) so that load from elsewhere on the machine hits all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from grpc import aio  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from lattice._tokens import mint_dev_token  # noqa: E402
from lattice.v1 import (  # noqa: E402
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from tests.support.ports import free_port  # noqa: E402

SECRET = "bench-secret-0123456789abcdef-0123456789"


async def serve_echo(port: int) -> None:
    """Run the tests' EchoInference on the shared runtime until killed.

    Logging and tracing are set up as `run_service` does for a real service.
    """
    from services.runtime.logs import configure_logging
    from services.runtime.telemetry import install_global_tracing
    from tests.gateway.support import start_echo

    configure_logging("inference")
    install_global_tracing("inference")
    server, _ = await start_echo("echo", port=port)
    await server.wait_for_termination()


async def serve_bare_proxy(port: int, upstream: str) -> None:
    """The floor for any Python gRPC hop: a grpc.aio forwarder with no logic at all."""
    from grpc_health.v1 import health

    channel = aio.insecure_channel(upstream)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)

    class Forward(inference_pb2_grpc.InferenceServiceServicer):
        async def Generate(self, request, context):
            return await stub.Generate(request, timeout=context.time_remaining())

    server = aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(Forward(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def wait_serving(address: str) -> None:
    async with aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{address} did not become SERVING")


def cpu_seconds(process: subprocess.Popen | None) -> float:
    """User + system CPU time of a process so far (0 for none)."""
    if process is None:
        return 0.0
    import psutil

    times = psutil.Process(process.pid).cpu_times()
    return times.user + times.system


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Path_:
    """Latencies and busy time of one path, accumulated over interleaved rounds."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.elapsed = 0.0
        #: CPU seconds the hop's own process (proxy or gateway) spent, over all rounds.
        self.hop_cpu = 0.0

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        return {
            "p50": statistics.median(ordered) * 1000,
            "p99": ordered[int(len(ordered) * 0.99) - 1] * 1000,
            "rps": len(ordered) / self.elapsed,
            "cpu_us": self.hop_cpu / len(ordered) * 1e6,
        }


async def measure(stub, metadata, requests: int, concurrency: int, into: Path_) -> None:
    request = inference_pb2.GenerateRequest(model="chat:1", prompt="hello world")
    per_worker = max(1, requests // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            started = time.perf_counter()
            await stub.Generate(request, metadata=metadata)
            into.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    into.elapsed += time.perf_counter() - started


async def main(requests: int, quotas: bool, rounds: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="lattice-bench-"))
    echo_port, registry_port = free_port(), free_port()
    processes = [
        spawn([__file__, "--serve-echo", str(echo_port)], {}),
        spawn(
            ["-m", "services.registry", "--port", str(registry_port), "--data-dir", str(data)], {}
        ),
    ]
    redis = None
    try:
        echo, registry = f"127.0.0.1:{echo_port}", f"127.0.0.1:{registry_port}"
        await wait_serving(echo)
        await wait_serving(registry)
        async with aio.insecure_channel(registry) as channel:
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            await stub.CreateModel(
                registry_pb2.CreateModelRequest(
                    model=registry_pb2.Model(
                        name="chat", task=common_pb2.MODEL_TASK_TEXT_GENERATION
                    )
                )
            )
            await stub.CreateVersion(
                registry_pb2.CreateVersionRequest(
                    model_name="chat",
                    artifact_uri="triton://127.0.0.1:1/chat",
                    format=common_pb2.ARTIFACT_FORMAT_TRITON,
                )
            )
            await stub.UpdateDeployment(
                registry_pb2.UpdateDeploymentRequest(
                    model_name="chat", routes=[registry_pb2.Route(version=1, weight=100)]
                )
            )
        gateways = {"bare aio proxy": free_port(), "gateway": free_port()}
        hops: dict[str, subprocess.Popen] = {}
        hops["bare aio proxy"] = spawn(
            [__file__, "--serve-proxy", str(gateways["bare aio proxy"]), echo], {}
        )
        processes.append(hops["bare aio proxy"])
        base_env = {
            "LATTICE_GATEWAY_REGISTRY_ADDRESS": registry,
            "LATTICE_GATEWAY_INFERENCE_ADDRESSES": echo,
            "LATTICE_GATEWAY_DEV_JWT_SECRET": SECRET,
        }
        hops["gateway"] = spawn(
            ["-m", "services.gateway", "--port", str(gateways["gateway"])], base_env
        )
        processes.append(hops["gateway"])
        if quotas:
            from tests.support.redis_server import RedisProcess

            redis = RedisProcess(data / "redis").start()
            gateways["gateway+quotas"] = free_port()
            hops["gateway+quotas"] = spawn(
                ["-m", "services.gateway", "--port", str(gateways["gateway+quotas"])],
                {
                    **base_env,
                    "LATTICE_GATEWAY_REDIS_URL": redis.url,
                    "LATTICE_GATEWAY_QUOTA_REQUESTS": str(10**9),
                },
            )
            processes.append(hops["gateway+quotas"])
        for port in gateways.values():
            await wait_serving(f"127.0.0.1:{port}")
        metadata = [("authorization", "Bearer " + mint_dev_token(SECRET, tenant="acme"))]

        # Paths are measured in interleaved rounds, so load from other processes on the
        # machine drifts over all of them alike instead of skewing one.
        targets = {"direct": (echo, [])}
        targets.update({name: (f"127.0.0.1:{port}", metadata) for name, port in gateways.items()})
        channels = {name: aio.insecure_channel(address) for name, (address, _) in targets.items()}
        stubs = {name: inference_pb2_grpc.InferenceServiceStub(c) for name, c in channels.items()}
        warm = inference_pb2.GenerateRequest(model="chat:1", prompt="warm up")
        for name, stub in stubs.items():
            for _ in range(200):
                await stub.Generate(warm, metadata=targets[name][1])
        rows: dict[tuple[str, int], dict[str, float]] = {}
        for concurrency in (1, 64):
            count = requests if concurrency == 1 else requests * 4
            paths = {name: Path_() for name in targets}
            for _ in range(rounds):
                for name, stub in stubs.items():
                    before = cpu_seconds(hops.get(name))
                    await measure(stub, targets[name][1], count // rounds, concurrency, paths[name])
                    paths[name].hop_cpu += cpu_seconds(hops.get(name)) - before
            for name, path in paths.items():
                rows[(name, concurrency)] = path.figures()
        for channel in channels.values():
            await channel.close()
        print(
            f"Gateway hop vs direct to inference (cheap Generate; {os.cpu_count()} cores, "
            "client + servers on one machine)"
        )
        print(
            f"{'path':<16}{'conc':>5}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
            f"{'p50 added':>11}{'p99 added':>11}{'throughput':>12}{'hop CPU us/req':>16}"
        )
        for (name, concurrency), row in rows.items():
            base = rows[("direct", concurrency)]
            print(
                f"{name:<16}{concurrency:>5}{row['p50']:>9.2f}{row['p99']:>9.2f}"
                f"{row['rps']:>9.0f}{row['p50'] - base['p50']:>+11.2f}"
                f"{row['p99'] - base['p99']:>+11.2f}{row['rps'] / base['rps']:>11.2f}x"
                f"{row['cpu_us']:>16.0f}"
            )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        if redis is not None:
            redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-quotas", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-proxy", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        asyncio.run(serve_echo(args.serve_echo))
    elif args.serve_proxy:
        asyncio.run(serve_bare_proxy(int(args.serve_proxy[0]), args.serve_proxy[1]))
    else:
        asyncio.run(main(args.requests, not args.no_quotas, args.rounds))
