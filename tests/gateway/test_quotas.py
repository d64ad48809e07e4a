"""Quotas in one real Redis shared by two real gateway replicas."""

from __future__ import annotations

import asyncio

import grpc
from google.rpc import error_details_pb2

from lattice.errors import from_rpc_error
from lattice.v1 import inference_pb2
from tests.gateway.support import bearer, token


async def test_two_replicas_admit_exactly_the_limit(stack, redis_server):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    await stack.start_inference(1)
    limit = 25
    replicas = [
        await stack.start_gateway(redis_url=redis_server.url, quota_requests=limit)
        for _ in range(2)
    ]
    stubs = [stack.inference_stub(g) for g in replicas]
    acme = bearer(token("acme"))
    request = inference_pb2.GenerateRequest(model="chat", prompt="hi")
    admitted = 0
    refusals: list[grpc.aio.AioRpcError] = []

    async def client(n: int) -> None:
        nonlocal admitted
        for i in range(3):  # each client alternates between the replicas
            try:
                await stubs[(n + i) % 2].Generate(request, metadata=acme)
                admitted += 1
            except grpc.aio.AioRpcError as error:
                refusals.append(error)

    await asyncio.gather(*(client(n) for n in range(40)))
    assert admitted == limit
    assert len(refusals) == 120 - limit
    assert {e.code() for e in refusals} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    error = from_rpc_error(refusals[0])
    failure = next(d for d in error.details if isinstance(d, error_details_pb2.QuotaFailure))
    assert failure.violations[0].subject == "tenant:acme"
    assert 0 < error.retry_after <= 60
    # Another tenant has its own quota.
    await stubs[0].Generate(request, metadata=bearer(token("globex")))


async def test_token_quota_counts_streamed_and_cancelled_streams(stack, redis_server):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    (echo,) = await stack.start_inference(1, stream_delay=0.02)
    gateway = await stack.start_gateway(redis_url=redis_server.url, quota_tokens=60)
    quotas = gateway.gateway._quotas
    stub = stack.inference_stub(gateway)
    acme = bearer(token("acme"))

    # A stream read to the end is charged its final usage (5 completion + 2 prompt).
    full = stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(
            model="chat",
            prompt="p",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=5),
        ),
        metadata=acme,
    )
    assert len([m async for m in full]) == 6
    await gateway.gateway.settle()
    assert await quotas.usage("acme") == (0, 7)

    # A cancelled stream is charged its prompt (2) and what it delivered, not what
    # was asked for (issue 21, defect 10: the prompt went uncharged).
    long = stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(
            model="chat",
            prompt="p",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=200),
        ),
        metadata=acme,
    )
    for _ in range(3):
        await long.read()
    long.cancel()
    await asyncio.wait_for(echo.stream_cancelled.wait(), 5)
    await asyncio.sleep(0.1)
    await gateway.gateway.settle()
    _, tokens = await quotas.usage("acme")
    assert 7 + 2 + 3 <= tokens <= 7 + 2 + 6, tokens
    assert echo.stream_sent < 50  # generation stopped upstream too

    # Unary usage counts as well; once the window holds >= the limit, refused.
    request = inference_pb2.GenerateRequest(model="chat", prompt=" ".join(["w"] * 30))
    await stub.Generate(request, metadata=acme)  # +60 tokens
    await gateway.gateway.settle()
    try:
        await stub.Generate(request, metadata=acme)
        raise AssertionError("expected RESOURCE_EXHAUSTED")
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "tokens" in error.details()


async def test_redis_down_fails_open_or_closed_as_configured(stack, redis_server):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    await stack.start_inference(1)
    open_gateway = await stack.start_gateway(
        redis_url=redis_server.url, quota_requests=3, quota_fail_open=True
    )
    closed_gateway = await stack.start_gateway(
        redis_url=redis_server.url, quota_requests=100, quota_fail_open=False
    )
    request = inference_pb2.GenerateRequest(model="chat", prompt="hi")
    acme = bearer(token("acme"))
    open_stub = stack.inference_stub(open_gateway)
    closed_stub = stack.inference_stub(closed_gateway)
    await closed_stub.Generate(request, metadata=acme)
    redis_server.kill()

    # Fail-open: served, but a per-replica limiter still holds the line.
    codes = []
    for _ in range(5):
        try:
            await open_stub.Generate(request, metadata=acme)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
    assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2

    # Fail-closed: UNAVAILABLE, with a message that says why.
    try:
        await closed_stub.Generate(request, metadata=acme)
        raise AssertionError("expected UNAVAILABLE")
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "quota" in error.details()
        # Issue 21, defect 11: a retryable error says when to retry.
        retry_after = from_rpc_error(error).retry_after
        assert retry_after is not None and 0 < retry_after <= 5
