"""The Redis response cache through the real service: hits, single-flight,
Redis outages, version isolation; the in-process tier in front of Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from lattice.v1 import inference_pb2
from services.inference.cache import LocalCache
from services.inference.serving import VersionState
from services.suite.embedded import Lab, deploy_lm, generate_request

GEN = {"gen_ai_operation_name": "text_completion"}


def backend_calls(lab) -> float:
    return lab.metric("lattice_inference_backend_calls_total", GEN)


async def assert_second_call_is_cached(lab, request) -> inference_pb2.GenerateResponse:
    """The same request twice: a miss, then the identical answer flagged cached.
    Returns the answer."""
    first = await lab.stub.Generate(request)
    second = await lab.stub.Generate(request)
    assert not first.cached and second.cached
    first.cached = True
    assert second == first
    return first


async def test_a_hit_returns_the_identical_response_flagged_cached(cached_lab, model_dirs):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    request = generate_request("lm", max_new_tokens=16)
    first = await assert_second_call_is_cached(lab, request)
    assert backend_calls(lab) == 1
    assert lab.metric("lattice_inference_cache_lookups_total", {"result": "hit"}) == 1

    # Opting out reads nothing from the cache and computes again.
    skipped = await lab.stub.Generate(generate_request("lm", max_new_tokens=16, skip_cache=True))
    assert not skipped.cached and skipped.text == first.text
    assert backend_calls(lab) == 2


async def test_only_deterministic_requests_are_cached(cached_lab, model_dirs):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    unseeded = generate_request("lm", max_new_tokens=8, temperature=1.0)
    seeded = generate_request("lm", max_new_tokens=8, temperature=1.0, seed=42)
    assert not (await lab.stub.Generate(unseeded)).cached
    assert not (await lab.stub.Generate(unseeded)).cached
    assert not (await lab.stub.Generate(seeded)).cached
    assert (await lab.stub.Generate(seeded)).cached


async def test_32_identical_concurrent_requests_cost_one_backend_call(cached_lab, model_dirs):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    backend = lab.backend("lm", 1)
    before = backend.tokens_generated
    request = generate_request("lm", prompt="The stars were bright", max_new_tokens=32)
    responses = await asyncio.gather(*(lab.stub.Generate(request) for _ in range(32)))
    assert len({r.text for r in responses}) == 1
    assert backend_calls(lab) == 1
    assert backend.tokens_generated - before == 32  # one generation of 32 tokens, not 32
    assert lab.metric("lattice_inference_coalesced_requests_total") >= 1


async def test_redis_outage_serves_uncached_then_caching_resumes(
    cached_lab, model_dirs, redis_server, caplog
):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    warm = generate_request("lm", prompt="Hello lattice", max_new_tokens=8)
    await lab.stub.Generate(warm)
    assert (await lab.stub.Generate(warm)).cached

    redis_server.kill()
    for i in range(10):
        response = await lab.stub.Generate(
            generate_request("lm", prompt=f"Outage {i}", max_new_tokens=4)
        )
        assert response.text is not None and not response.cached
    # The earlier hit is not reachable either: served, not cached.
    assert not (await lab.stub.Generate(warm)).cached
    assert lab.metric("lattice_inference_cache_lookups_total", {"result": "error"}) >= 10
    errors = lab.metric("lattice_inference_cache_errors_total", {"operation": "get"})
    assert errors >= 1
    assert "response cache unavailable" in caplog.text

    redis_server.start()  # same port, empty
    request = generate_request("lm", prompt="Back again", max_new_tokens=4)
    for _ in range(100):  # the breaker retries Redis after cache_retry_seconds
        await lab.stub.Generate(request)
        if (await lab.stub.Generate(request)).cached:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("caching did not resume after Redis came back")


async def test_a_cached_stream_replays_the_cached_text(cached_lab, model_dirs):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    request = inference_pb2.GenerateStreamRequest(
        model="lm",
        prompt="Once upon a time",
        parameters=inference_pb2.GenerationParameters(max_new_tokens=12),
    )
    live = [m async for m in lab.stub.GenerateStream(request)]
    replay = [m async for m in lab.stub.GenerateStream(request)]
    assert not any(m.cached for m in live) and all(m.cached for m in replay)
    assert "".join(m.delta for m in replay) == "".join(m.delta for m in live)
    assert replay[-1].usage == live[-1].usage
    assert replay[-1].finish_reason == live[-1].finish_reason
    assert replay[0].model_version == 1
    # The unary call hits the same entry.
    unary = await lab.stub.Generate(generate_request("lm", max_new_tokens=12))
    assert unary.cached and unary.text == "".join(m.delta for m in live)


@pytest.fixture(params=[0, None], ids=["redis-only", "local-tier"])
async def either_lab(request, tmp_path, redis_server):
    """Redis alone, and Redis behind the default local tier."""
    tier = {} if request.param is None else {"cache_local_entries": request.param}
    lab = await Lab(tmp_path, redis_url=redis_server.url, **tier).start()
    yield lab
    await lab.stop()


async def test_a_new_version_never_serves_the_old_versions_answer(either_lab, model_dirs):
    lab = either_lab
    await deploy_lm(lab, model_dirs)
    request = generate_request("lm", max_new_tokens=16)
    v1 = await lab.stub.Generate(request)
    assert (await lab.stub.Generate(request)).cached

    await lab.register("lm", model_dirs["lm2"])
    await lab.deploy("lm", {2: 100})
    await lab.wait_state("lm", 2, VersionState.READY)
    await lab.wait_unloaded("lm", 1)
    v2 = await lab.stub.Generate(generate_request("lm", max_new_tokens=16))
    assert v2.model_version == 2 and not v2.cached
    assert v2.text != v1.text


async def test_an_unreadable_cache_entry_is_a_miss_not_an_error(
    cached_lab, model_dirs, redis_server
):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    request = generate_request("lm", max_new_tokens=8)
    first = await lab.stub.Generate(request)
    client = redis.Redis.from_url(redis_server.url)
    keys = await client.keys("lattice:inference:*")
    assert len(keys) == 1
    await client.set(keys[0], b"not json")
    again = await lab.stub.Generate(request)
    assert not again.cached and again.text == first.text
    assert (await lab.stub.Generate(request)).cached  # rewritten
    await client.aclose()


# -- the in-process tier (on by default) --------------------------------------


async def test_the_local_tier_answers_hot_keys_and_outlives_a_redis_outage(
    tiered_lab, model_dirs, redis_server
):
    lab = tiered_lab
    await deploy_lm(lab, model_dirs)
    request = generate_request("lm", max_new_tokens=16)
    await assert_second_call_is_cached(lab, request)
    assert lab.metric("lattice_inference_cache_lookups_total", {"result": "hit_local"}) == 1
    assert lab.metric("lattice_inference_cache_lookups_total", {"result": "hit"}) == 0

    redis_server.kill()
    assert (await lab.stub.Generate(request)).cached  # no Redis needed for a hot key
    fresh = await lab.stub.Generate(generate_request("lm", prompt="Outage", max_new_tokens=4))
    assert not fresh.cached  # a cold key is served uncached, as without the tier
    assert backend_calls(lab) == 2


def test_the_local_tier_is_bounded_by_entries_bytes_and_ttl(monkeypatch):
    tier = LocalCache(entries=3, max_bytes=100, ttl_seconds=10)
    for key in "abc":
        tier.put(key, key.upper(), 10)
    assert tier.get("a") == "A"  # now the most recently used
    tier.put("d", "D", 10)  # over 3 entries: the least recently used (b) goes
    assert (tier.get("b"), len(tier), tier.size_bytes) == (None, 3, 30)
    tier.put("e", "E", 85)  # c goes (4 entries), then a (105 bytes > 100)
    assert [tier.get(k) for k in "acde"] == [None, None, "D", "E"]
    assert tier.size_bytes == 95
    tier.put("huge", "H", 101)  # bigger than the whole tier: not kept
    assert tier.get("huge") is None and tier.size_bytes == 95

    clock = [1000.0]
    monkeypatch.setattr("services.inference.cache.time.monotonic", lambda: clock[0])
    tier.put("f", "F", 5)
    clock[0] += 11
    assert tier.get("f") is None and tier.size_bytes == 95  # expired with the TTL
