"""Latency and throughput the gateway hop adds, against calling inference directly.

Processes (each its own Python process, as deployed): a cheap InferenceService
(services.suite.echo's EchoInference on the shared runtime, with logging and tracing set
up as `run_service` does: a response that costs almost nothing, to isolate the
hop, as a cached response would), a real registry, and a real gateway
(`python -m services.gateway`, production defaults: HS256 dev tokens with the
verified-token cache, JSON access log on, tracing as configured by the
environment). Also measured, as floors: a bare grpc.aio forwarder with no logic
at all, and a forwarder on the shared runtime (`LatticeServer` +
`create_channel`) without the gateway's logic. Optionally a second gateway with
Redis quotas. The client runs in this process.

The client calls as the lattice SDK does by default: with a deadline (120 s for
Generate), on every path; each hop propagates it. `--client-timeout 0` sends
none (then only the hops add a deadline of their own, an extra cost the direct
path does not have).

Figures: p50/p99 latency at concurrency 1 and 64, and requests/s, for direct
vs each hop; "added" = hop - direct; throughput as a ratio; and the CPU each
process spends per request (hop, inference, this client), so the shared
2-core machine can be read: at concurrency 64 all processes compete for it.

    .venv/bin/python bench/gateway_overhead.py [--requests 2000] [--rounds 5]
        [--no-quotas] [--otlp] [--client-timeout 120]

`--otlp` runs a local OTLP collector and points the services at it
(OTEL_EXPORTER_OTLP_ENDPOINT), so every hop records and exports its spans;
without it, no exporter is configured and spans are not recorded (trace
context still propagates). Paths are measured in interleaved rounds (direct,
bare proxy, gateway, ... then again) so that load from elsewhere on the
machine hits all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice._config import DEFAULT_TIMEOUTS
from lattice.tokens import mint_dev_token
from lattice.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.suite.echo import start_echo
from services.suite.embedded import OPERATOR
from services.suite.ports import free_port
from services.suite.signing import signed_channel

ROOT = Path(__file__).resolve().parents[1]

SECRET = "bench-secret-0123456789abcdef-0123456789"


async def serve_echo(port: int) -> None:
    """Run the EchoInference on the shared runtime until killed.

    Logging and tracing are set up as `run_service` does for a real service.
    """
    from services.runtime.logs import configure_logging
    from services.runtime.telemetry import install_global_tracing

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


async def serve_runtime_proxy(port: int, upstream: str) -> None:
    """A forwarder on the shared runtime (LatticeServer + create_channel), no gateway logic."""
    from services.runtime import LatticeServer, ServerSettings, Service, create_channel
    from services.runtime.logs import configure_logging
    from services.runtime.telemetry import install_global_tracing

    configure_logging("proxy")
    install_global_tracing("proxy")
    stub = inference_pb2_grpc.InferenceServiceStub(create_channel(upstream))

    class Forward(inference_pb2_grpc.InferenceServiceServicer):
        async def Generate(self, request, context):
            return await stub.Generate(request)

    server = LatticeServer(
        [
            Service(
                Forward(),
                inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
            )
        ],
        ServerSettings(port=port),
    )
    await server.start()
    await server.wait_for_termination()


async def serve_collector(port: int) -> None:
    """An OTLP/gRPC trace receiver that accepts and drops spans (for --otlp)."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        async def Export(self, request, context):
            return trace_service_pb2.ExportTraceServiceResponse()

    server = aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def capacity_ratio(row: dict[str, float]) -> float:
    """Throughput via the hop / direct when CPU, not this shared machine, is the limit.

    Direct, inference serves 1 / inference_cpu requests per core-second; through
    the hop, the slower of the two stages (each on its own core) sets the pace.
    """
    return row["inference_us"] / max(row["cpu_us"], row["inference_us"])


async def wait_listening(port: int) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise RuntimeError(f"nothing listens on port {port}")


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
        #: CPU seconds spent over all rounds by the hop's own process (proxy or
        #: gateway), by the inference process, and by this client process.
        self.hop_cpu = 0.0
        self.inference_cpu = 0.0
        self.client_cpu = 0.0

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        count = len(ordered)
        return {
            "p50": statistics.median(ordered) * 1000,
            "p99": ordered[int(count * 0.99) - 1] * 1000,
            "rps": count / self.elapsed,
            "cpu_us": self.hop_cpu / count * 1e6,
            "inference_us": self.inference_cpu / count * 1e6,
            "client_us": self.client_cpu / count * 1e6,
        }


async def measure(
    stub, metadata, requests: int, concurrency: int, into: Path_, timeout: float | None
) -> None:
    request = inference_pb2.GenerateRequest(model="chat:1", prompt="hello world")
    per_worker = max(1, requests // concurrency)

    async def worker() -> None:
        for _ in range(per_worker):
            started = time.perf_counter()
            await stub.Generate(request, metadata=metadata, timeout=timeout)
            into.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    into.elapsed += time.perf_counter() - started


async def main(requests: int, quotas: bool, rounds: int, otlp: bool, timeout: float | None) -> None:
    data = Path(tempfile.mkdtemp(prefix="lattice-bench-"))
    echo_port, registry_port = free_port(), free_port()
    tracing: dict[str, str] = {}
    processes = []
    if otlp:
        collector_port = free_port()
        processes.append(spawn([__file__, "--serve-collector", str(collector_port)], {}))
        await wait_listening(collector_port)
        tracing = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
        }
    inference_process = spawn([__file__, "--serve-echo", str(echo_port)], tracing)
    processes += [
        inference_process,
        spawn(
            [
                "-m",
                "services.registry",
                "--port",
                str(registry_port),
                "--data-dir",
                str(data),
                # The model's version names a Triton address on loopback (never called).
                "--remote-allowlist",
                "127.0.0.1:*",
            ],
            {},
        ),
    ]
    redis = None
    try:
        echo, registry = f"127.0.0.1:{echo_port}", f"127.0.0.1:{registry_port}"
        await wait_serving(echo)
        await wait_serving(registry)
        # The registry takes only signed calls; the key ring is the one it made in `data`.
        async with signed_channel(registry, data, "registry", caller=OPERATOR) as channel:
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
        gateways = {
            "bare aio proxy": free_port(),
            "runtime proxy": free_port(),
            "gateway": free_port(),
        }
        hops: dict[str, subprocess.Popen] = {}
        hops["bare aio proxy"] = spawn(
            [__file__, "--serve-proxy", str(gateways["bare aio proxy"]), echo], {}
        )
        processes.append(hops["bare aio proxy"])
        hops["runtime proxy"] = spawn(
            [__file__, "--serve-rproxy", str(gateways["runtime proxy"]), echo], tracing
        )
        processes.append(hops["runtime proxy"])
        base_env = {
            **tracing,
            "LATTICE_GATEWAY_REGISTRY_ADDRESS": registry,
            "LATTICE_GATEWAY_INFERENCE_ADDRESSES": echo,
            "LATTICE_GATEWAY_DEV_JWT_SECRET": SECRET,
            # One suite, one key ring: the gateway signs its registry calls with the registry's.
            "LATTICE_GATEWAY_KEY_RING_FILE": str(data / DEFAULT_KEY_RING_PATH),
            "LATTICE_GATEWAY_DATA_DIR": str(data / "gateway"),
        }
        hops["gateway"] = spawn(
            ["-m", "services.gateway", "--port", str(gateways["gateway"])], base_env
        )
        processes.append(hops["gateway"])
        if quotas:
            from services.suite.redis import RedisProcess

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
                await stub.Generate(warm, metadata=targets[name][1], timeout=timeout)
        rows: dict[tuple[str, int], dict[str, float]] = {}
        for concurrency in (1, 64):
            count = requests if concurrency == 1 else requests * 4
            paths = {name: Path_() for name in targets}
            for _ in range(rounds):
                for name, stub in stubs.items():
                    path = paths[name]
                    hop, inference = cpu_seconds(hops.get(name)), cpu_seconds(inference_process)
                    client = time.process_time()
                    await measure(
                        stub, targets[name][1], count // rounds, concurrency, path, timeout
                    )
                    path.client_cpu += time.process_time() - client
                    path.inference_cpu += cpu_seconds(inference_process) - inference
                    path.hop_cpu += cpu_seconds(hops.get(name)) - hop
            for name, path in paths.items():
                rows[(name, concurrency)] = path.figures()
        for channel in channels.values():
            await channel.close()
        print(
            f"Gateway hop vs direct to inference (cheap Generate; {os.cpu_count()} cores, "
            "client + servers on one machine)"
        )
        print(
            "settings: production defaults (access log on, verified-token cache); client "
            + (f"deadline {timeout:g} s" if timeout else "without a deadline")
            + "; tracing: "
            + (
                "OTLP exporter to a local collector (spans recorded)"
                if otlp
                else "no exporter (spans not recorded, context propagated)"
            )
        )
        print(
            f"{'path':<16}{'conc':>5}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
            f"{'p50 added':>11}{'p99 added':>11}{'throughput':>12}"
            f"{'CPU us/req: hop':>17}{'inference':>10}{'client':>8}"
        )
        for (name, concurrency), row in rows.items():
            base = rows[("direct", concurrency)]
            print(
                f"{name:<16}{concurrency:>5}{row['p50']:>9.2f}{row['p99']:>9.2f}"
                f"{row['rps']:>9.0f}{row['p50'] - base['p50']:>+11.2f}"
                f"{row['p99'] - base['p99']:>+11.2f}{row['rps'] / base['rps']:>11.2f}x"
                f"{row['cpu_us']:>17.0f}{row['inference_us']:>10.0f}{row['client_us']:>8.0f}"
            )
        print(
            "per-core capacity at 64 (if the hop and inference each had their own core): "
            + ", ".join(
                f"{name} {capacity_ratio(rows[(name, 64)]):.2f}x"
                for name in gateways
                if (name, 64) in rows
            )
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
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-quotas", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--otlp", action="store_true", help="export spans to a local collector")
    parser.add_argument(
        "--client-timeout",
        type=float,
        default=DEFAULT_TIMEOUTS["generate"],
        help="deadline each call sets, as the lattice SDK does for Generate (0 = none)",
    )
    parser.add_argument("--serve-collector", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-proxy", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve-rproxy", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_collector:
        asyncio.run(serve_collector(args.serve_collector))
    elif args.serve_echo:
        asyncio.run(serve_echo(args.serve_echo))
    elif args.serve_rproxy:
        asyncio.run(serve_runtime_proxy(int(args.serve_rproxy[0]), args.serve_rproxy[1]))
    elif args.serve_proxy:
        asyncio.run(serve_bare_proxy(int(args.serve_proxy[0]), args.serve_proxy[1]))
    else:
        asyncio.run(
            main(
                args.requests,
                not args.no_quotas,
                args.rounds,
                args.otlp,
                args.client_timeout or None,
            )
        )
