"""Registry figures: Watch fan-out latency and read throughput, against baselines.

Runs a real registry (`python -m services.registry`, its own process, SQLite
in a temporary directory) and measures from this process:

* deployment change -> arrival at 100 Watch subscribers (p50/p99), as a
  ratio against the same change arriving at 1 subscriber;
* GetDeployment and ResolveModel calls/s, and UpdateDeployment writes/s, as
  ratios against a bare grpc.health.v1 Check on the same server.

    .venv/bin/python bench/registry_watch_and_resolve.py [--changes 30] [--seconds 2]
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

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice.artifacts import sha256_hex
from lattice.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.suite.embedded import OPERATOR
from services.suite.ports import free_port
from services.suite.signing import signed_channel

ROOT = Path(__file__).resolve().parents[1]

pb = registry_pb2
SYNCED = pb.WATCH_EVENT_TYPE_SYNCED
ROUNDS = 5


async def wait_serving(address: str) -> None:
    async with aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(200):
            try:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("registry did not start")


async def seed(stub) -> None:
    await stub.CreateModel(
        pb.CreateModelRequest(
            model=pb.Model(name="bench", task=common_pb2.MODEL_TASK_TEXT_GENERATION)
        )
    )
    for index in range(2):
        data = f"weights-{index}".encode() * 1000
        digest = sha256_hex(data)
        await stub.UploadArtifact(
            iter(
                [
                    pb.UploadArtifactRequest(
                        header=pb.ArtifactHeader(digest=digest, size_bytes=len(data))
                    ),
                    pb.UploadArtifactRequest(chunk=data),
                ]
            )
        )
        await stub.CreateVersion(
            pb.CreateVersionRequest(
                model_name="bench",
                artifact_uri=f"lattice-artifact://sha256/{digest}",
                artifact_digest=digest,
                format=common_pb2.ARTIFACT_FORMAT_TRANSFORMERS,
            )
        )
    await stub.SetAlias(pb.SetAliasRequest(model_name="bench", alias="champion", version=1))


def connect(address: str, data_dir: Path) -> aio.Channel:
    """A channel whose calls the registry accepts: signed with the key ring it made."""
    return signed_channel(address, data_dir, "registry", caller=OPERATOR)


async def fan_out(
    address: str, data_dir: Path, stub, subscribers: int, changes: int
) -> list[float]:
    """Latencies (s) from sending a deployment change to each subscriber receiving it."""
    channels = [connect(address, data_dir) for _ in range(min(subscribers, 10))]
    arrivals: dict[int, list[float]] = {}
    complete: dict[int, asyncio.Event] = {}
    ready = asyncio.Event()
    synced = 0

    async def subscriber(index: int) -> None:
        nonlocal synced
        watch = registry_pb2_grpc.ModelRegistryServiceStub(channels[index % len(channels)])
        async for event in watch.Watch(pb.WatchRequest(model_names=["bench"])):
            if event.type == SYNCED:
                synced += 1
                if synced == subscribers:
                    ready.set()
            elif event.WhichOneof("object") == "deployment":
                times = arrivals.setdefault(event.revision, [])
                times.append(time.perf_counter())
                if len(times) == subscribers:
                    complete.setdefault(event.revision, asyncio.Event()).set()

    tasks = [asyncio.create_task(subscriber(i)) for i in range(subscribers)]
    await asyncio.wait_for(ready.wait(), 60)
    latencies: list[float] = []
    for change in range(changes):
        weight = 10 + (change % 80)
        sent = time.perf_counter()
        reply = await stub.UpdateDeployment(
            pb.UpdateDeploymentRequest(
                model_name="bench",
                routes=[
                    pb.Route(version=1, weight=100 - weight),
                    pb.Route(version=2, weight=weight),
                ],
            )
        )
        revision = reply.deployment.revision
        await asyncio.wait_for(complete.setdefault(revision, asyncio.Event()).wait(), 30)
        latencies += [t - sent for t in arrivals[revision]]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()
    return latencies


async def throughput(call, seconds: float, concurrency: int = 16) -> float:
    """Completed calls per second with `concurrency` calls in flight."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(changes: int, seconds: float) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.registry",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            await wait_serving(address)
            async with connect(address, data_dir) as channel:
                stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
                health = health_pb2_grpc.HealthStub(channel)
                await seed(stub)

                # Rounds alternate so that load from elsewhere hits both sides alike.
                one: list[float] = []
                hundred: list[float] = []
                per_round = max(1, changes // ROUNDS)
                for _ in range(ROUNDS):
                    one += await fan_out(address, data_dir, stub, 1, per_round)
                    hundred += await fan_out(address, data_dir, stub, 100, per_round)

                check = health_pb2.HealthCheckRequest()
                get = pb.GetDeploymentRequest(model_name="bench")
                resolve = pb.ResolveModelRequest(model="bench@champion")
                rates: dict[str, list[float]] = {"base": [], "get": [], "resolve": []}
                for _ in range(ROUNDS):
                    slice_ = seconds / ROUNDS
                    rates["base"].append(await throughput(lambda: health.Check(check), slice_))
                    rates["get"].append(await throughput(lambda: stub.GetDeployment(get), slice_))
                    rates["resolve"].append(
                        await throughput(lambda: stub.ResolveModel(resolve), slice_)
                    )
                base_cps, get_cps, resolve_cps = (
                    statistics.mean(rates[k]) for k in ("base", "get", "resolve")
                )
                flips = iter(range(10**9))

                def write():
                    weight = 10 + next(flips) % 80
                    return stub.UpdateDeployment(
                        pb.UpdateDeploymentRequest(
                            model_name="bench",
                            routes=[
                                pb.Route(version=1, weight=100 - weight),
                                pb.Route(version=2, weight=weight),
                            ],
                        )
                    )

                write_cps = await throughput(write, seconds, concurrency=4)
        finally:
            process.terminate()
            await process.wait()

    ms = 1000
    print(
        f"Watch fan-out, {len(one)} deployment changes each (send -> arrival), "
        f"{ROUNDS} alternating rounds:"
    )
    print(
        f"  1 subscriber     p50 {pct(one, 0.5) * ms:7.2f} ms  p99 {pct(one, 0.99) * ms:7.2f} ms"
        "  (baseline)"
    )
    print(
        f"  100 subscribers  p50 {pct(hundred, 0.5) * ms:7.2f} ms  "
        f"p99 {pct(hundred, 0.99) * ms:7.2f} ms  "
        f"ratio p50 x{pct(hundred, 0.5) / pct(one, 0.5):.1f}, "
        f"p99 x{pct(hundred, 0.99) / pct(one, 0.99):.1f}  "
        f"(mean {statistics.mean(hundred) * ms:.2f} ms)"
    )
    print(f"Calls per second (16 in flight, one channel, {ROUNDS} alternating rounds):")
    print(f"  health Check     {base_cps:8.0f} /s  (baseline)")
    print(f"  GetDeployment    {get_cps:8.0f} /s  ratio {get_cps / base_cps:.2f}")
    print(f"  ResolveModel     {resolve_cps:8.0f} /s  ratio {resolve_cps / base_cps:.2f}")
    print(
        f"  UpdateDeployment {write_cps:8.0f} /s  ratio {write_cps / base_cps:.2f}"
        "  (4 in flight; one SQLite transaction each, synchronous=FULL)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(args.changes, args.seconds))
