"""Errors map to the right status; size and deadline limits hold; the server survives."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice.errors import InvalidArgument, NotFound, from_rpc_error
from lattice.v1 import inference_pb2, inference_pb2_grpc


async def _generate(address: str, prompt: str, timeout: float | None = 5.0):
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return await stub.Generate(inference_pb2.GenerateRequest(prompt=prompt), timeout=timeout)


async def _assert_still_serving(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    ("prompt", "code", "fragment"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, "prompt: must not be 'invalid'"),
        ("missing", grpc.StatusCode.NOT_FOUND, "not registered"),
        ("crash", grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
async def test_domain_errors_map_to_status_codes(probe_server, prompt, code, fragment):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate(probe_server.address, prompt)
    assert caught.value.code() == code
    assert fragment in caught.value.details()
    await _assert_still_serving(probe_server.address)


async def test_unexpected_errors_leak_nothing(probe_server):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate(probe_server.address, "crash")
    assert "secret internal detail" not in caught.value.details()
    assert "Traceback" not in caught.value.details()


async def test_invalid_argument_carries_bad_request_detail(probe_server):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate(probe_server.address, "invalid")
    error = from_rpc_error(caught.value)
    assert isinstance(error, InvalidArgument)
    assert error.field == "prompt"
    assert any(isinstance(d, error_details_pb2.BadRequest) for d in error.details)


async def test_from_rpc_error_gives_the_matching_class(probe_server):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate(probe_server.address, "missing")
    assert isinstance(from_rpc_error(caught.value), NotFound)


async def test_unimplemented_method_answers_unimplemented(probe_server):
    async with grpc.aio.insecure_channel(probe_server.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Embed(inference_pb2.EmbedRequest(model="m", inputs=["x"]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_oversized_message_is_resource_exhausted(probe_server):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate(probe_server.address, "x" * (128 * 1024))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    await _assert_still_serving(probe_server.address)
    reply = await _generate(probe_server.address, "small")
    assert reply.text == "small"


async def test_past_deadline_is_deadline_exceeded(probe_server):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _generate(probe_server.address, "sleep:2", timeout=0.2)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _assert_still_serving(probe_server.address)
