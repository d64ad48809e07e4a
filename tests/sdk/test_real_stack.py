"""The SDK through the real gateway to the real inference and registry, with a
tiny GPT-2-style model: generate, stream, cancel by breaking out, errors."""

from __future__ import annotations

import asyncio
import time

import pytest

import lattice
from lattice.tokens import mint_dev_token
from tests.sdk.real_stack import ENCODER, MODEL, SECRET
from tests.support.identity import internal_token

pytestmark = pytest.mark.slow


def _completed_streams(stack) -> float:
    """Streams the inference server finished and recorded (cancelled ones are not)."""
    value = stack.servers["inference"].metrics_registry.get_sample_value(
        "gen_ai_server_time_per_output_token_seconds_count", {"gen_ai_request_model": MODEL}
    )
    return value or 0.0


def _in_flight(stack) -> int:
    token = internal_token(stack.root, "inference")
    with lattice.Client(stack.address("inference"), token) as direct:
        return sum(m.in_flight for m in direct.loaded_models().models)


def test_generate_and_stream_through_the_gateway(stack):
    with lattice.Client(stack.gateway, stack.token) as client:
        result = client.generate(MODEL, "Once upon a time", max_new_tokens=8, skip_cache=True)
        assert isinstance(result, lattice.Generation)
        assert (result.model_name, result.model_version) == (MODEL, 1)
        assert result.usage.completion_tokens >= 1 and result.text
        deltas = list(client.stream(MODEL, "Once upon a time", max_new_tokens=8, skip_cache=True))
        assert "".join(d.text for d in deltas) == result.text  # greedy: same text
        assert deltas[-1].finish_reason == result.finish_reason


def test_breaking_out_stops_generation_in_the_inference_server(stack):
    with lattice.Client(stack.gateway, stack.token) as client:
        before = _completed_streams(stack)
        list(client.stream(MODEL, "Once", max_new_tokens=4, skip_cache=True))
        assert _completed_streams(stack) == before + 1  # a finished stream is recorded
        before += 1
        for delta in client.stream(MODEL, "Once", max_new_tokens=480, skip_cache=True):
            if delta.index >= 2:
                break
        deadline = time.monotonic() + 5
        while _in_flight(stack) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _in_flight(stack) == 0, "the inference server is still generating"
    time.sleep(0.3)
    # The cancelled stream never completed (480 tokens take seconds on this CPU).
    assert _completed_streams(stack) == before


async def test_async_client_through_the_gateway(stack):
    async with lattice.AsyncClient(stack.gateway, stack.token) as client:
        result = await client.generate(MODEL, "Hello", max_new_tokens=4)
        assert result.model_name == MODEL
        text = "".join([d.text async for d in client.stream(MODEL, "Hello", max_new_tokens=4)])
        assert text == result.text
        assert (await client.resolve(MODEL)).deployment.routes[0].version == 1
        assert [v.version for v in await client.list_versions(MODEL)] == [1]


async def test_gateway_errors_map_to_the_exception_tree(stack):
    async with lattice.AsyncClient(stack.gateway, "not-a-jwt") as client:
        with pytest.raises(lattice.Unauthenticated):
            await client.generate(MODEL, "hi")
    reader = mint_dev_token(SECRET, tenant="acme", scopes=["registry:read"])
    async with lattice.AsyncClient(stack.gateway, reader) as client:
        with pytest.raises(lattice.PermissionDenied):
            await client.generate(MODEL, "hi")
    async with lattice.AsyncClient(stack.gateway, stack.token) as client:
        with pytest.raises(lattice.NotFound):
            await client.generate("no-such-model", "hi")
        with pytest.raises(lattice.InvalidArgument) as invalid:
            await client.generate(MODEL, "")
        assert invalid.value.field
        with pytest.raises(lattice.InvalidArgument):
            await client.generate(MODEL, "hi", temperature=5.0)
    await asyncio.sleep(0)


def test_embed_through_the_gateway(stack):
    with lattice.Client(stack.gateway, stack.token) as client:
        result = client.embed(ENCODER, ["a small text", "another one"], normalize=True)
        assert isinstance(result, lattice.Embeddings)
        assert (result.model_name, result.model_version) == (ENCODER, 1)
        assert len(result.vectors) == 2 and len(result.vectors[0]) == 64
        norm = sum(x * x for x in result.vectors[0]) ** 0.5
        assert abs(norm - 1.0) < 1e-4
        with pytest.raises(lattice.LatticeError) as wrong_task:
            client.embed(MODEL, ["x"])
        assert isinstance(wrong_task.value, lattice.InvalidArgument | lattice.FailedPrecondition)


def test_quota_exhausted_carries_retry_after_and_the_subject(stack):
    from google.rpc import error_details_pb2

    token = mint_dev_token(SECRET, tenant="quota-tenant", scopes=["inference:invoke"])
    with lattice.Client(stack.address("limited"), token) as client:
        client.generate(MODEL, "one", max_new_tokens=1)
        with pytest.raises(lattice.ResourceExhausted) as exhausted:
            client.generate(MODEL, "two", max_new_tokens=1)
    error = exhausted.value
    assert 0 < error.retry_after <= 600
    quota = [d for d in error.details if isinstance(d, error_details_pb2.QuotaFailure)]
    assert "quota-tenant" in quota[0].violations[0].subject
