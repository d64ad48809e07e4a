"""Upstreams: failover when a replica dies under load, outlier ejection, deadlines, tracing."""

from __future__ import annotations

import asyncio

import grpc
from opentelemetry.sdk.trace import TracerProvider

from lattice.v1 import inference_pb2
from services.gateway.server import build_server
from services.suite.echo import start_echo
from tests.gateway.support import bearer, token


async def test_killing_one_of_two_replicas_under_load_keeps_unary_succeeding(stack):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    first, second = await stack.start_inference(2)
    gateway = await stack.start_gateway(outlier_consecutive_failures=2)
    stub = stack.inference_stub(gateway)
    acme = bearer(token())
    request = inference_pb2.GenerateRequest(model="chat", prompt="a b c")
    failures: list[grpc.StatusCode] = []
    done = 0
    hundred_done = asyncio.Event()

    async def client() -> None:
        nonlocal done
        for _ in range(25):
            try:
                await stub.Generate(request, metadata=acme)
                done += 1
                if done >= 100:
                    hundred_done.set()
            except grpc.aio.AioRpcError as error:
                failures.append(error.code())

    async def killer() -> None:
        await hundred_done.wait()
        server, _ = stack.inference[0]
        await server.stop(0)

    await asyncio.gather(killer(), *(client() for _ in range(16)))
    assert failures == []
    assert done == 16 * 25
    assert first.requests and second.requests
    pool = gateway.gateway._inference
    dead = next(r for r in pool.replicas if r.address == stack.inference[0][0].address)
    assert dead.ejections >= 1  # outlier detection took it out of rotation
    health = gateway.metrics_registry.get_sample_value
    assert health("lattice_gateway_upstream_healthy", {"address": dead.address}) == 0
    before = len(second.requests)
    for _ in range(20):
        await stub.Generate(request, metadata=acme)
    assert len(second.requests) == before + 20


async def test_ejected_replica_is_probed_back_in(stack):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    server, echo = await start_echo("flaky")
    address = server.address
    await stack.start_inference(1)
    stack.inference.insert(0, (server, echo))
    gateway = await stack.start_gateway(
        outlier_consecutive_failures=1, outlier_ejection_seconds=0.3, replica_poll_seconds=0.1
    )
    pool = gateway.gateway._inference
    flaky = next(r for r in pool.replicas if r.address == address)
    await server.stop(0)
    stub = stack.inference_stub(gateway)
    request = inference_pb2.GenerateRequest(model="chat", prompt="x")
    acme = bearer(token())
    for _ in range(6):
        await stub.Generate(request, metadata=acme)
    assert flaky.ejections >= 1
    # Bring a server back on the same port; after the ejection it gets traffic again.
    _host, port = address.rsplit(":", 1)
    revived, revived_echo = await start_echo("revived", port=int(port))
    stack.inference[0] = (revived, revived_echo)
    await asyncio.sleep(0.7)
    for _ in range(20):
        await stub.Generate(request, metadata=acme)
        if revived_echo.requests:
            break
        await asyncio.sleep(0.05)
    assert revived_echo.requests
    assert flaky.ejections == 0


async def test_deadline_shrinks_and_trace_and_request_id_propagate(stack):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    (echo,) = await stack.start_inference(1)
    provider = TracerProvider()
    gateway = await build_server(stack.settings(), tracer_provider=provider)
    await gateway.start()
    stack.gateways.append(gateway)
    stub = stack.inference_stub(gateway)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    metadata = [
        *bearer(token()),
        ("x-request-id", "req-12345"),
        ("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),
    ]
    await stub.Generate(
        inference_pb2.GenerateRequest(model="chat", prompt="x"), metadata=metadata, timeout=2.0
    )
    remaining = echo.remaining[-1]
    assert remaining is not None and 1.0 < remaining < 2.0
    seen = echo.metadata[-1]
    assert seen["x-request-id"] == "req-12345"
    assert seen["traceparent"].split("-")[1] == trace_id  # one trace across the hop

    # Streams carry the deadline too.
    stream = stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(model="chat", prompt="x"),
        metadata=metadata,
        timeout=2.0,
    )
    assert len([m async for m in stream]) == 5
    assert 1.0 < echo.remaining[-1] < 2.0


async def test_stream_fails_over_before_the_first_message_only(stack):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    first, second = await stack.start_inference(2, stream_delay=0.05)
    gateway = await stack.start_gateway()
    stub = stack.inference_stub(gateway)
    acme = bearer(token())
    await stack.inference[0][0].stop(0)  # dead before the stream starts: fails over
    request = inference_pb2.GenerateStreamRequest(
        model="chat", prompt="x", parameters=inference_pb2.GenerationParameters(max_new_tokens=3)
    )
    for _ in range(4):
        assert len([m async for m in stub.GenerateStream(request, metadata=acme)]) == 4
    # Killed mid-stream: the error reaches the caller; nothing is replayed elsewhere.
    long = inference_pb2.GenerateStreamRequest(
        model="chat", prompt="x", parameters=inference_pb2.GenerationParameters(max_new_tokens=100)
    )
    call = stub.GenerateStream(long, metadata=acme)
    await call.read()
    streams_before = len(second.requests)
    await stack.inference[1][0].stop(0)
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
        raise AssertionError("the stream should have failed")
    except grpc.aio.AioRpcError as error:
        assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    assert len(second.requests) == streams_before
    assert len(first.requests) == 0


async def test_shadow_failures_never_eject_a_replica(stack):
    """Issue 21, defect 7: a failing shadow version ejected healthy replicas."""
    await stack.start_registry()
    await stack.model("chat", 2, [(1, 100)], shadow=2)
    replicas = await stack.start_inference(
        2, unavailable_versions=(2,), loaded=(("chat", 1), ("chat", 2))
    )
    gateway = await stack.start_gateway(outlier_consecutive_failures=2)
    stub = stack.inference_stub(gateway)
    acme = bearer(token())
    request = inference_pb2.GenerateRequest(model="chat", prompt="a b c")
    for _ in range(20):
        response = await stub.Generate(request, metadata=acme)
        assert response.model_version == 1
    await gateway.gateway.settle()
    assert any(r.model == "chat:2" for replica in replicas for r in replica.requests)
    pool = gateway.gateway._inference
    assert [r.ejections for r in pool.replicas] == [0, 0]
    health = gateway.metrics_registry.get_sample_value
    for replica in pool.replicas:
        assert health("lattice_gateway_upstream_healthy", {"address": replica.address}) == 1
