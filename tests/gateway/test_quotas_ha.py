"""Quotas on highly available Redis: exact limits across a Sentinel failover and
on a Cluster, where each subject's keys share one hash slot so the Lua scripts
run on one node."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from redis.crc import key_slot

from lattice.errors import ResourceExhausted, Unavailable
from services.gateway.quotas import QuotaLimiter, QuotaLimits, connect


async def admit_all(limiter: QuotaLimiter, tenant: str, attempts: int) -> int:
    """Concurrent admissions for `tenant`; how many got in."""
    results = await asyncio.gather(
        *(limiter.admit(tenant, "chat") for _ in range(attempts)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, ResourceExhausted):
            raise result
    return sum(not isinstance(r, BaseException) for r in results)


async def test_the_limit_stays_exact_across_a_sentinel_failover(redis_sentinel):
    limiter = QuotaLimiter(
        connect(redis_sentinel.url),
        QuotaLimits(requests=10, tokens=100, window_seconds=60),
        fail_open=False,  # fail-open would admit on per-replica limits meanwhile
        retry_interval=0.1,
    )
    try:
        admitted = []
        for _ in range(6):
            admitted.append(await limiter.admit("acme", "chat"))
        await limiter.record_tokens(admitted[0], 40)
        redis_sentinel.replicated()  # what the primary acknowledged reached the replica
        redis_sentinel.kill_primary_and_wait_for_failover()

        # The quota store answers again once redis-py follows the sentinel to the
        # promoted replica; until then each admission is refused, none let in.
        deadline = time.monotonic() + 10
        while True:
            try:
                admitted.append(await limiter.admit("acme", "chat"))
                break
            except Unavailable:
                assert time.monotonic() < deadline, "the limiter never reached the new primary"
                await asyncio.sleep(0.05)
        assert await admit_all(limiter, "acme", 10) == 3
        assert await limiter.usage("acme") == (10, 40)
        with pytest.raises(ResourceExhausted, match="requests quota of 10"):
            await limiter.admit("acme", "chat")
        follower = connect(redis_sentinel.url)
        assert (await follower.info("server"))["tcp_port"] == redis_sentinel.replica.port
        await follower.aclose()
    finally:
        await limiter.close()


async def test_cluster_quotas_are_exact_per_tenant_under_concurrency(redis_cluster):
    limiter = QuotaLimiter(
        connect(redis_cluster.url), QuotaLimits(requests=5, tokens=50, window_seconds=60)
    )
    tenants = [f"cluster-{i}" for i in range(12)]
    try:
        # Subjects spread over the cluster's nodes; each subject's keys share a slot.
        slots = set()
        for tenant in tenants:
            keys = limiter._keys(limiter.subject(tenant, "chat"))
            assert len({key_slot(k.encode()) for k in keys}) == 1
            slots.add(key_slot(keys[0].encode()))
        assert len(slots) > 3
        counts = await asyncio.gather(*(admit_all(limiter, t, 8) for t in tenants))
        assert counts == [5] * len(tenants)
        first = await asyncio.gather(*(limiter.admit(f"tokens-{t}", "chat") for t in tenants))
        await asyncio.gather(*(limiter.record_tokens(a, 50) for a in first))
        for tenant in tenants:
            assert await limiter.usage(tenant) == (5, 0)
            assert await limiter.usage(f"tokens-{tenant}") == (1, 50)
            with pytest.raises(ResourceExhausted, match="tokens"):
                await limiter.admit(f"tokens-{tenant}", "chat")
    finally:
        await limiter.close()


async def test_cluster_scripts_reload_after_a_script_flush(redis_cluster):
    limiter = QuotaLimiter(connect(redis_cluster.url), QuotaLimits(requests=3, window_seconds=60))
    try:
        await limiter.admit("flushed", "chat")
        for node in redis_cluster.nodes:
            direct = redis.Redis(port=node.port)
            direct.script_flush()
            direct.close()
        assert await admit_all(limiter, "flushed", 4) == 2
        assert await limiter.usage("flushed") == (3, 0)
    finally:
        await limiter.close()
