"""Load generator for the inference benchmarks: client processes that send
one kind of request for a fixed time and count the answers. Separate
processes, so the clients' CPU is not charged to the server being measured.

The clients sign their calls as bench/inference_setup.py describes: one token
from the key ring in the servers' data directory, minted before they start.

Also runnable on its own against any inference server whose data directory
(key ring) is at hand, e.g. the one `lattice up` runs:

    .venv/bin/python bench/inference_load.py --address 127.0.0.1:50053 --method generate \
        [--data-dir .lattice]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import time
from pathlib import Path
from typing import Any

import psutil
from inference_setup import Signed, signed_metadata

from services.runtime.keys import DEFAULT_KEY_RING_PATH

METHODS = ("health", "generate", "generate-uncached", "embed")


def _requests(method: str, model: str):
    """(stub method name, request factory taking (client, n))."""
    from grpc_health.v1 import health_pb2

    from lattice.v1 import inference_pb2

    if method == "health":
        return "Check", lambda _c, _n: health_pb2.HealthCheckRequest()
    if method == "generate":
        request = inference_pb2.GenerateRequest(
            model=model,
            prompt="Once upon a time",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=64),
        )
        return "Generate", lambda _c, _n: request
    if method == "generate-uncached":
        return "Generate", lambda c, n: inference_pb2.GenerateRequest(
            model=model,
            prompt=f"Story {c}-{n}: once upon a time",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=32),
            skip_cache=True,
        )
    return "Embed", lambda c, n: inference_pb2.EmbedRequest(
        model=model, inputs=[f"sentence {c} number {n} about a quick brown fox"], skip_cache=True
    )


def _client(address, signed: Signed, method, model, seconds, concurrency, ready, go, out) -> None:
    import grpc
    from grpc_health.v1 import health_pb2_grpc

    from lattice.v1 import inference_pb2_grpc

    async def run() -> int:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = (
                health_pb2_grpc.HealthStub(channel)
                if method == "health"
                else inference_pb2_grpc.InferenceServiceStub(channel)
            )
            name, make = _requests(method, model)
            send = getattr(stub, name)

            def call(request):
                return send(request, metadata=signed)

            await call(make(-1, 0))
            ready.put(True)
            await asyncio.get_running_loop().run_in_executor(None, go.wait)
            count = 0
            deadline = time.monotonic() + seconds

            async def worker(c: int) -> None:
                nonlocal count
                n = 0
                while time.monotonic() < deadline:
                    await call(make(c, n))
                    n += 1
                    count += 1

            await asyncio.gather(*(worker(os.getpid() * 1000 + i) for i in range(concurrency)))
            return count

    out.put(asyncio.run(run()))


def server_cpu() -> float:
    """CPU seconds of this process (where the benchmarks run the servers)
    plus its redis-server children."""
    me = psutil.Process(os.getpid())
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        if "redis" in child.name():
            total += sum(child.cpu_times()[:2])
    return total


def _next(results: Any, procs: list[Any]) -> Any:
    """The next value a client puts on `results`; raises if a client died instead
    (its traceback is above), so a failing call ends the benchmark, not hangs it."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            if any(proc.exitcode not in (None, 0) for proc in procs):
                for proc in procs:
                    proc.terminate()
                raise RuntimeError("a load client failed (its error is printed above)") from None


def run_load(
    address: str,
    method: str,
    *,
    data_dir: Path,
    model: str = "lm",
    seconds: float = 5.0,
    processes: int = 2,
    concurrency: int = 16,
) -> tuple[int, float, float]:
    """(requests answered, server CPU seconds, wall seconds). Blocking: call
    it from a thread when the servers run on this process's event loop.
    `data_dir` holds the key ring the server at `address` verifies tokens with."""
    signed = signed_metadata(data_dir, lifetime=seconds + 3600)
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_client,
            args=(address, signed, method, model, seconds, concurrency, ready, go, out),
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        _next(ready, procs)
    cpu0, wall0 = server_cpu(), time.monotonic()
    go.set()
    counts = [_next(out, procs) for _ in procs]
    cpu1, wall1 = server_cpu(), time.monotonic()
    for proc in procs:
        proc.join()
    return sum(counts), cpu1 - cpu0, wall1 - wall0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(".lattice"), help="holds the suite's key ring"
    )
    parser.add_argument("--method", choices=METHODS, default="generate")
    parser.add_argument("--model", default="lm")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    a = parser.parse_args()
    if not (a.data_dir / DEFAULT_KEY_RING_PATH).exists():
        parser.error(f"no key ring in {a.data_dir} (the data directory of the suite at --address)")
    count, _cpu, wall = run_load(
        a.address,
        a.method,
        data_dir=a.data_dir,
        model=a.model,
        seconds=a.seconds,
        processes=a.processes,
        concurrency=a.concurrency,
    )
    print(f"{a.method}: {count} answers in {wall:.2f}s = {count / wall:.0f}/s")
