"""Bounded server streams at the gateway (issue 21, defect 14): a cap per tenant, an idle
timeout, and per-connection limits with a maximum connection age."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from lattice.errors import ResourceExhausted, Unavailable, from_rpc_error
from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.gateway.server import GatewaySettings
from services.gateway.stream_limits import IdleTimer, StreamSlots, idle_limited
from services.runtime.server import server_options
from tests.gateway.support import bearer, token


async def _watch(stack, gateway, tenant: str):
    stub = registry_pb2_grpc.ModelRegistryServiceStub(stack.channel(gateway.address))
    call = stub.Watch(
        registry_pb2.WatchRequest(), metadata=bearer(token(tenant, scopes=("registry:read",)))
    )
    await call.read()  # the snapshot: the stream is open through the gateway
    return call


async def test_streams_per_tenant_are_capped(stack):
    """Issue 21, defect 14: nothing limited concurrent streams (10k idle Watch streams)."""
    await stack.start_registry()
    await stack.start_inference(1)
    gateway = await stack.start_gateway(max_streams_per_tenant=2)
    first = await _watch(stack, gateway, "acme")
    second = await _watch(stack, gateway, "acme")  # held: a dropped call is cancelled
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _watch(stack, gateway, "acme")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert from_rpc_error(refused.value).retry_after is not None
    other = await _watch(stack, gateway, "other")  # another tenant is not affected
    first.cancel()
    for _ in range(100):  # the slot comes back once the gateway sees the cancel
        try:
            await _watch(stack, gateway, "acme")
            second.cancel()
            other.cancel()
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.02)
    raise AssertionError("the cancelled stream's slot never came back")


async def test_idle_streams_are_ended_with_unavailable(stack):
    await stack.start_registry()
    await stack.start_inference(1)
    gateway = await stack.start_gateway(stream_idle_timeout_seconds=0.3)
    call = await _watch(stack, gateway, "acme")
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        while True:
            await call.read()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "idle" in ended.value.details()
    assert from_rpc_error(ended.value).retry_after == 0


def test_gateway_connections_have_an_age_and_a_stream_cap():
    options = dict(server_options(GatewaySettings()))
    assert options["grpc.max_connection_age_ms"] == 600_000
    assert options["grpc.max_concurrent_streams"] == 1000


def test_stream_slots_count_per_tenant_and_give_back():
    slots = StreamSlots(per_tenant=2)
    with slots.hold("acme"), slots.hold("acme"):
        assert slots.open_streams("acme") == 2
        with pytest.raises(ResourceExhausted) as refused, slots.hold("acme"):
            pass
        assert refused.value.retry_after == 1.0
        with slots.hold("other"):
            assert slots.open_streams("other") == 1
    assert slots.open_streams("acme") == 0


async def test_idle_limited_ends_a_silent_stream_and_passes_a_busy_one():
    async def ticking(gap: float, count: int):
        for i in range(count):
            await asyncio.sleep(gap)
            yield i

    assert [i async for i in idle_limited(ticking(0.01, 5), 0.2)] == [0, 1, 2, 3, 4]
    with pytest.raises(Unavailable):
        [i async for i in idle_limited(ticking(0.5, 2), 0.1)]


async def _gapped(*gaps: float):
    """One item after each gap (seconds), counted from when it is asked for."""
    for i, gap in enumerate(gaps):
        await asyncio.sleep(gap)
        yield i


async def test_idle_time_counts_only_while_waiting_for_the_stream():
    """One timer per stream, not one per wait: a consumer slower than the limit
    is never cut, and each wait gets the whole limit from when it starts (0.3 s
    spent consuming + a 0.2 s wait is past 0.4 s since the last item, and fine)."""
    received = []
    async for item in idle_limited(_gapped(0.0, 0.2, 0.2), 0.4):
        received.append(item)
        await asyncio.sleep(0.3)  # the consumer, slower than the idle limit
    assert received == [0, 1, 2]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Unavailable):
        async for _ in idle_limited(_gapped(0.0, 5.0), 0.4):
            await asyncio.sleep(0.3)
            started = loop.time()  # the wait for the silent item starts now
    assert loop.time() - started >= 0.4


async def test_a_cancellation_from_elsewhere_stays_a_cancellation():
    async def wait_under_timer() -> None:
        with IdleTimer(5.0) as timer:
            timer.waiting()
            await asyncio.sleep(5.0)

    task = asyncio.create_task(wait_under_timer())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelling() == 1  # not uncancelled: the cancel was not the timer's


async def test_the_idle_timer_raises_timeout_error_and_leaves_the_task_uncancelled():
    with pytest.raises(TimeoutError), IdleTimer(0.05) as timer:
        timer.waiting()
        await asyncio.sleep(5.0)
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0)  # the task goes on as before
