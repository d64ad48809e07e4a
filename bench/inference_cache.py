"""Response cache: latency of a cache hit vs a miss for a 64-token greedy
generation, through the real inference service (gRPC, registry-loaded tiny
GPT-2, real Redis). Baseline: the miss (a new prompt each time, so the model
runs and the answer is written to Redis). The service runs with its defaults
(bench/inference_setup.py), so a hit is served by the in-process tier in front
of Redis; `--local-entries 0` times hits that each read Redis.

    .venv/bin/python bench/inference_cache.py [--requests 40] [--local-entries 0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from inference_setup import as_run_service

from services.suite.embedded import Lab, deploy_lm, generate_request
from services.suite.redis import RedisProcess
from services.suite.tiny_models import build_tiny_causal_lm


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(requests: int, local_entries: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = as_run_service(root / "inference.log")
        redis = RedisProcess(root / "redis").start()
        tier = {} if local_entries is None else {"cache_local_entries": local_entries}
        lab = await Lab(root / "lab", redis_url=redis.url, **tier).start()
        try:
            models = {"lm1": build_tiny_causal_lm(root / "lm1", seed=1)}
            await deploy_lm(lab, models)
            misses, hits, tokens = [], [], []
            for i in range(requests):
                request = generate_request(
                    "lm", prompt=f"Story {i}: once upon a time", max_new_tokens=64
                )
                start = time.perf_counter()
                response = await lab.stub.Generate(request)
                misses.append(time.perf_counter() - start)
                assert not response.cached
                tokens.append(response.usage.completion_tokens)
            hit_request = generate_request(
                "lm", prompt="Story 0: once upon a time", max_new_tokens=64
            )
            for _ in range(requests * 10):
                start = time.perf_counter()
                response = await lab.stub.Generate(hit_request)
                hits.append(time.perf_counter() - start)
                assert response.cached
            served = {
                result: lab.metric("lattice_inference_cache_lookups_total", {"result": result})
                for result in ("hit_local", "hit")
            }
        finally:
            await lab.stop()
            redis.stop()
    miss_p50, hit_p50 = statistics.median(misses), statistics.median(hits)
    print("64-token greedy Generate through the inference service (tiny GPT-2, CPU)")
    print(
        f"  {setup}; hits from the local tier {served['hit_local']:.0f}, Redis {served['hit']:.0f}"
    )
    print(
        f"  misses generated {statistics.mean(tokens):.1f} tokens on average"
        " (EOS may end one early)"
    )
    print(
        f"  miss (baseline): p50 {miss_p50 * 1e3:8.2f} ms   p99 {pct(misses, 0.99) * 1e3:8.2f} ms"
    )
    print(f"  hit            : p50 {hit_p50 * 1e3:8.2f} ms   p99 {pct(hits, 0.99) * 1e3:8.2f} ms")
    print(f"  hit is {miss_p50 / hit_p50:.0f}x faster than a miss at p50 (goal >= 50x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument(
        "--local-entries", type=int, default=None, help="default: the service's default"
    )
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.local_entries))
