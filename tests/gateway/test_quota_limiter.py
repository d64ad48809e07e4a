"""QuotaLimiter on a real Redis, without gRPC: sliding windows, per-model subjects, details."""

from __future__ import annotations

import asyncio

import pytest
import redis
from google.rpc import error_details_pb2

from lattice.errors import ResourceExhausted
from services.gateway.quotas import QuotaLimiter, QuotaLimits, connect


async def test_sliding_window_frees_slots_as_entries_age_out(redis_server):
    limiter = QuotaLimiter(connect(redis_server.url), QuotaLimits(requests=3, window_seconds=0.5))
    try:
        for _ in range(3):
            assert (await limiter.admit("acme", "chat")).shared
        with pytest.raises(ResourceExhausted) as caught:
            await limiter.admit("acme", "chat")
        retry = next(d for d in caught.value.details if isinstance(d, error_details_pb2.RetryInfo))
        assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= 0.5
        await asyncio.sleep(0.6)
        await limiter.admit("acme", "chat")
        assert (await limiter.usage("acme"))[0] == 1
    finally:
        await limiter.close()


async def test_per_model_subjects_are_independent(redis_server):
    limiter = QuotaLimiter(
        connect(redis_server.url), QuotaLimits(requests=1, tokens=10, per_model=True)
    )
    try:
        a = await limiter.admit("acme", "chat")
        await limiter.admit("acme", "embed")  # another model: its own quota
        with pytest.raises(ResourceExhausted, match="requests"):
            await limiter.admit("acme", "chat")
        assert a.subject == "tenant:acme/model:chat"
        await limiter.record_tokens(a, 12)
        assert await limiter.usage("acme", "chat") == (1, 12)
        assert await limiter.usage("acme", "embed") == (1, 0)
    finally:
        await limiter.close()


async def test_tokens_over_the_limit_refuse_until_they_age_out(redis_server):
    limiter = QuotaLimiter(connect(redis_server.url), QuotaLimits(tokens=10, window_seconds=0.5))
    try:
        admission = await limiter.admit("acme", "chat")
        await limiter.record_tokens(admission, 10)
        with pytest.raises(ResourceExhausted, match="tokens") as caught:
            await limiter.admit("acme", "chat")
        failure = next(
            d for d in caught.value.details if isinstance(d, error_details_pb2.QuotaFailure)
        )
        assert failure.violations[0].description.startswith("tokens per")
        await asyncio.sleep(0.6)
        await limiter.admit("acme", "chat")
        assert (await limiter.usage("acme"))[1] == 0
    finally:
        await limiter.close()


async def test_quotas_off_touch_nothing():
    limiter = QuotaLimiter(None, QuotaLimits())
    assert await limiter.admit("acme", "chat") is None
    await limiter.record_tokens(None, 100)


async def test_concurrent_admissions_share_round_trips_and_stay_exact(redis_server):
    """Callers queued behind an in-flight admission go out as one pipeline; the count is
    still exact, also after Redis lost its script cache (NOSCRIPT -> load and run)."""
    limiter = QuotaLimiter(
        connect(redis_server.url), QuotaLimits(requests=150), prefix="lattice:batch"
    )
    admitted = refused = 0

    async def caller() -> None:
        nonlocal admitted, refused
        for _ in range(5):
            try:
                await limiter.admit("acme", "chat")
                admitted += 1
            except ResourceExhausted:
                refused += 1

    try:
        await asyncio.gather(*(caller() for _ in range(20)))  # 100 admissions
        redis.Redis.from_url(redis_server.url).script_flush()
        await asyncio.gather(*(caller() for _ in range(20)))  # 100 more
        assert (admitted, refused) == (150, 50)
        assert (await limiter.usage("acme"))[0] == 150
        assert not limiter.degraded
    finally:
        await limiter.close()
