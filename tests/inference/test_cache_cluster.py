"""The response cache on a real Redis Cluster: answers cached through the
service, and concurrent lookups batched without cross-slot MGETs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

from services.inference.cache import KEY_PREFIX
from services.inference.pipelining import GetPipeline
from services.runtime.redis_client import connect, multi_get
from services.suite.embedded import Lab, deploy_lm, generate_request

GEN = {"gen_ai_operation_name": "text_completion"}


@pytest.fixture
async def cluster_lab(tmp_path, redis_cluster) -> AsyncIterator[Lab]:
    lab = await Lab(
        tmp_path, redis_url=redis_cluster.url, cache_retry_seconds=0.2, cache_local_entries=0
    ).start()
    yield lab
    await lab.stop()


async def test_answers_are_cached_on_a_cluster_and_concurrent_hits_batch(cluster_lab, model_dirs):
    lab = cluster_lab
    await deploy_lm(lab, model_dirs)
    requests = [generate_request("lm", max_new_tokens=n) for n in range(1, 17)]
    for request in requests:
        assert not (await lab.stub.Generate(request)).cached
    answers = await asyncio.gather(*(lab.stub.Generate(r) for r in requests))
    assert all(answer.cached for answer in answers)
    assert lab.metric("lattice_inference_cache_lookups_total", {"result": "hit"}) == 16
    assert lab.metric("lattice_inference_cache_lookups_total", {"result": "error"}) == 0
    assert lab.metric("lattice_inference_backend_calls_total", GEN) == 16


async def test_queued_lookups_across_slots_get_their_own_values(redis_cluster):
    client = connect(redis_cluster.url)
    try:
        keys = [f"{KEY_PREFIX}eco-{i}" for i in range(32)]
        for i, key in enumerate(keys):
            await client.set(key, f"v{i}")
        assert len({key_slot(k.encode()) for k in keys}) == 32
        gets = GetPipeline(client, trace.get_tracer(__name__), mget=multi_get(client))
        values = await asyncio.gather(*(gets.get(k) for k in [*keys, "absent"]))
        assert values == [f"v{i}".encode() for i in range(32)] + [None]

        # Without the slot-aware multi-get, the same queue is refused by the cluster.
        plain = GetPipeline(client, trace.get_tracer(__name__))
        results = await asyncio.gather(*(plain.get(k) for k in keys), return_exceptions=True)
        assert any(isinstance(r, RedisClusterException) for r in results)
    finally:
        await client.aclose()
