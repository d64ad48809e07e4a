"""Cached unary Generate requests per second per server core.

The registry and inference servers run in this process; the load comes from
client processes (bench/inference_load.py), so the clients' CPU is not
charged to the server. Every request is the same deterministic Generate, so
after the first one each is a response-cache hit (real Redis). The figure is
requests divided by the CPU seconds of the servers (this process) plus
redis-server: requests per second per fully used core. Baseline: the same
load on the gRPC health Check of the same server (the runtime's per-RPC work
and transport only), the ceiling of any RPC on this stack.

The server runs with production defaults (bench/inference_setup.py), including
the in-process cache tier in front of Redis; `--local-entries 0` measures
Redis alone (every hit a Redis GET).

    .venv/bin/python bench/inference_cached_rps.py [--seconds 5] [--local-entries 0]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from inference_load import run_load
from inference_setup import as_run_service

from services.inference.server import InferenceSettings
from services.suite.embedded import Lab, deploy_lm, generate_request
from services.suite.redis import RedisProcess
from services.suite.tiny_models import build_tiny_causal_lm


async def main(args) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = as_run_service(root / "inference.log")
        redis = RedisProcess(root / "redis").start()
        tier = {} if args.local_entries is None else {"cache_local_entries": args.local_entries}
        lab = await Lab(root / "lab", redis_url=redis.url, **tier).start()
        try:
            await deploy_lm(lab, {"lm1": build_tiny_causal_lm(root / "lm1", seed=1)})
            await lab.stub.Generate(generate_request("lm", max_new_tokens=64))
            loop = asyncio.get_running_loop()
            for method in ("health", "generate"):
                # The servers keep running on this loop while the clients work.
                results[method] = await loop.run_in_executor(
                    None,
                    lambda m=method: run_load(
                        lab.inference.address,
                        m,
                        data_dir=lab.root,
                        seconds=args.seconds,
                        processes=args.processes,
                        concurrency=args.concurrency,
                    ),
                )
            lookups = {
                result: lab.metric("lattice_inference_cache_lookups_total", {"result": result})
                for result in ("hit", "hit_local", "miss", "error")
            }
        finally:
            await lab.stop()
            redis.stop()
    entries = InferenceSettings.cache_local_entries
    entries = entries if args.local_entries is None else args.local_entries
    print(
        f"cached unary Generate: {args.processes} client processes x {args.concurrency} in"
        f" flight; {setup}; local cache tier entries {entries}"
        + (" (default)" if args.local_entries is None else "")
    )
    per_core = {}
    for method, (count, cpu, wall) in results.items():
        per_core[method] = count / cpu
        print(
            f"  {method:8s}: {count / wall:7.0f} req/s wall, servers used {cpu / wall:4.2f} cores,"
            f" {count / cpu:7.0f} req/s per core"
        )
    total = sum(lookups.values()) or 1
    print(
        "  cache lookups: "
        + ", ".join(f"{k} {v / total:.1%}" for k, v in lookups.items())
        + "  (an error = Redis timed out: served uncached, the model ran)"
    )
    print(
        f"  cached Generate per core = {per_core['generate'] / per_core['health']:.2f}x the"
        f" health Check ({per_core['generate']:.0f}/s per core; goal >= 4000/s per core)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--local-entries", type=int, default=None, help="default: the service's default"
    )
    asyncio.run(main(parser.parse_args()))
