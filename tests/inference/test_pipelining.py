"""Auto-pipelined Redis GETs against a real Redis: lookups that arrive while
one is in flight share one MGET, each gets its own value, and giving up or a
failure never strands the others."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis
from opentelemetry import trace

from services.inference.pipelining import GetPipeline


@pytest.fixture
async def client(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    await client.flushdb()
    await client.mset({f"k{i}": f"v{i}" for i in range(40)})
    await client.config_resetstat()
    yield client
    await client.aclose()


async def commands(client) -> dict[str, int]:
    stats = await client.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("get", "mget")}


def pipeline(client) -> GetPipeline:
    return GetPipeline(client, trace.get_tracer(__name__))


async def test_concurrent_lookups_share_commands_and_get_their_own_values(client):
    gets = pipeline(client)
    keys = [f"k{i}" for i in range(40)] + ["absent", "k3"]
    values = await asyncio.gather(*(gets.get(k) for k in keys))
    assert values == [f"v{i}".encode() for i in range(40)] + [None, b"v3"]
    calls = await commands(client)
    assert calls["get"] == 1  # the first went alone, the rest queued behind it
    assert 1 <= calls["mget"] <= 2
    assert await gets.get("k7") == b"v7"  # idle again: a plain GET


async def test_a_lookup_that_gives_up_strands_nobody(client, redis_server):
    gets = pipeline(client)
    blocker = redis.Redis.from_url(redis_server.url)
    asleep = asyncio.ensure_future(blocker.execute_command("DEBUG", "SLEEP", "0.3"))
    await asyncio.sleep(0.05)  # Redis answers nothing for a while
    first = asyncio.ensure_future(gets.get("k0"))
    await asyncio.sleep(0.01)  # k0 is in flight; these queue behind it
    queued = [asyncio.ensure_future(gets.get(f"k{i}")) for i in (1, 2, 3)]
    await asyncio.sleep(0.01)
    queued[0].cancel()  # the one that would send the next batch
    first.cancel()  # and the one in flight
    results = await asyncio.gather(first, *queued, return_exceptions=True)
    await asleep
    await blocker.aclose()
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[1], asyncio.CancelledError)
    assert results[2:] == [b"v2", b"v3"]
    assert await asyncio.wait_for(gets.get("k4"), 2) == b"v4"


async def test_a_failure_reaches_every_queued_lookup(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    gets = pipeline(client)
    await gets.get("warm")  # connected
    redis_server.kill()
    try:
        results = await asyncio.gather(
            *(gets.get(f"k{i}") for i in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, Exception) for r in results)
    finally:
        redis_server.start()
        await client.aclose()
    again = redis.Redis.from_url(redis_server.url)
    assert await asyncio.wait_for(pipeline(again).get("k1"), 5) is None  # empty after restart
    await again.aclose()
