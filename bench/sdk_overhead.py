"""SDK overhead: Client calls vs raw generated stubs on the same channel kind, and
CLI start-up vs a bare interpreter.

    .venv/bin/python bench/sdk_overhead.py

Runs a small real gRPC server in-process (services.suite.echo, on a background loop); prints
per-call latencies and their ratio to the baseline measured in this same run.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

import lattice
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.suite.echo import start_echo

ROOT = Path(__file__).resolve().parents[1]

CALLS = 400
STREAMS = 60
ROUNDS = 5


def per_call(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def compare(baseline, candidate, n: int) -> tuple[float, float]:
    """Median per-call time of each, measured in alternating rounds (fair under load)."""
    for _ in range(20):
        baseline()
        candidate()
    base, cand = [], []
    for _ in range(ROUNDS):
        base.append(per_call(baseline, n))
        cand.append(per_call(candidate, n))
    return statistics.median(base), statistics.median(cand)


def startup(args: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    logging.getLogger("lattice.rpc").setLevel(logging.WARNING)  # no access log per call
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, _ = asyncio.run_coroutine_threadsafe(start_echo("tiny"), loop).result(30)
    try:
        channel = grpc.insecure_channel(server.address)
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.GenerateRequest(
            model="tiny",
            prompt="hi",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=4),
        )
        stream_request = inference_pb2.GenerateStreamRequest(
            model="tiny",
            prompt="hi",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=4),
        )
        raw_unary = per_call(lambda: stub.Generate(request, timeout=30), CALLS)
        raw_stream = per_call(
            lambda: list(stub.GenerateStream(stream_request, timeout=30)), STREAMS
        )
        with lattice.Client(server.address, "token") as client:
            sdk_unary = per_call(lambda: client.generate("tiny", "hi", max_new_tokens=4), CALLS)
            sdk_stream = per_call(
                lambda: list(client.stream("tiny", "hi", max_new_tokens=4)), STREAMS
            )
        channel.close()
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)

    bare = startup([sys.executable, "-c", "pass"])
    grpc_only = startup([sys.executable, "-c", "import grpc"])
    cli = startup([sys.executable, "-m", "lattice.cli", "--help"])
    print(f"{'measure':<38}{'value':>12}{'ratio':>10}")
    rows = [
        ("Generate, raw stub (baseline)", raw_unary * 1e6, "us", 1.0),
        ("Generate, lattice.Client", sdk_unary * 1e6, "us", sdk_unary / raw_unary),
        ("GenerateStream 5 msgs, raw (baseline)", raw_stream * 1e6, "us", 1.0),
        ("GenerateStream 5 msgs, Client.stream", sdk_stream * 1e6, "us", sdk_stream / raw_stream),
        ("python -c pass (baseline)", bare * 1e3, "ms", 1.0),
        ("python -c 'import grpc'", grpc_only * 1e3, "ms", grpc_only / bare),
        ("lattice --help (CLI start-up)", cli * 1e3, "ms", cli / bare),
    ]
    for name, value, unit, ratio in rows:
        print(f"{name:<38}{value:>9.0f} {unit:<2}{ratio:>9.2f}x")


if __name__ == "__main__":
    main()
