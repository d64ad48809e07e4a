"""How the cache's batched lookups should read a Redis Cluster: one batch of
32 cache keys (sha256 names, so each in its own slot) read by
  - `mget_nonatomic` (redis-py groups by slot, one MGET per slot, pipelined per node;
    what `redis_client.multi_get` uses and the cache sends on a Cluster),
  - a cluster pipeline of 32 GETs,
  - 32 concurrent plain GETs (no batching at all),
against a real three-primary cluster on loopback. Baseline: one MGET of the same
32 keys on a single redis-server (what the cache sends without Cluster).

    .venv/bin/python bench/redis_cluster_gets.py [--rounds 300] [--batch 32]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio.cluster import RedisCluster

from services.inference.cache import KEY_PREFIX
from services.runtime.redis_client import connect
from services.suite.redis import RedisProcess
from services.suite.redis_ha import ClusterGroup


async def timed(rounds: int, call: Callable[[], Awaitable[object]]) -> float:
    """Median seconds per call over `rounds` (after a few warm-up calls)."""
    for _ in range(10):
        await call()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


async def main(rounds: int, batch: int) -> None:
    keys = [KEY_PREFIX + hashlib.sha256(str(i).encode()).hexdigest() for i in range(batch)]
    with tempfile.TemporaryDirectory() as tmp:
        single = RedisProcess(Path(tmp) / "single").start()
        cluster = ClusterGroup(Path(tmp) / "cluster").start()
        plain, clustered = connect(single.url), connect(cluster.url)
        assert isinstance(clustered, RedisCluster)
        try:
            for client in (plain, clustered):
                for key in keys:
                    await client.set(key, b"x" * 200)

            async def cluster_pipeline() -> object:
                pipe = clustered.pipeline()
                for key in keys:
                    pipe.get(key)
                return await pipe.execute()

            base = await timed(rounds, lambda: plain.mget(keys))
            results = {
                "cluster mget_nonatomic": await timed(
                    rounds, lambda: clustered.mget_nonatomic(keys)
                ),
                "cluster pipeline of GETs": await timed(rounds, cluster_pipeline),
                "cluster concurrent GETs": await timed(
                    rounds, lambda: asyncio.gather(*(clustered.get(k) for k in keys))
                ),
            }
        finally:
            await plain.aclose()
            await clustered.aclose()
            cluster.stop()
            single.stop()
    print(f"batch of {batch} keys, median of {rounds} rounds")
    print(f"  baseline single-server MGET   {base * 1e6:8.0f} us   1.00x")
    for name, seconds in results.items():
        print(f"  {name:<29} {seconds * 1e6:8.0f} us  {seconds / base:5.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.batch))
