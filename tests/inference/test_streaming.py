"""GenerateStream over gRPC: deltas, cancellation, deadlines."""

from __future__ import annotations

import asyncio
import time

import grpc

from lattice.v1 import inference_pb2
from services.suite.embedded import deploy_lm, generate_request, poll


def stream_request(max_new_tokens: int, **kwargs) -> inference_pb2.GenerateStreamRequest:
    return inference_pb2.GenerateStreamRequest(
        model="lm",
        prompt="Once upon a time",
        parameters=inference_pb2.GenerationParameters(max_new_tokens=max_new_tokens),
        **kwargs,
    )


async def test_stream_matches_unary_and_names_the_version(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    messages = [m async for m in lab.stub.GenerateStream(stream_request(24))]
    unary = await lab.stub.Generate(generate_request("lm", max_new_tokens=24))
    assert "".join(m.delta for m in messages) == unary.text
    assert [m.index for m in messages] == list(range(len(messages)))
    assert messages[0].model_name == "lm" and messages[0].model_version == 1
    assert messages[-1].finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert messages[-1].usage == unary.usage
    # The prompt's size comes first, so a stream cut short can be charged for it.
    assert messages[0].prompt_tokens == unary.usage.prompt_tokens > 0
    ttft = lab.metric(
        "gen_ai_server_time_to_first_token_seconds_count", {"gen_ai_request_model": "lm"}
    )
    assert ttft == 1


async def test_cancelling_a_stream_after_3_tokens_stops_the_backend_within_50ms(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    backend = lab.backend("lm", 1)
    call = lab.stub.GenerateStream(stream_request(480, skip_cache=True))
    received = 0
    while received < 3:
        message = await call.read()
        received += bool(message.delta)
    produced_at_cancel = backend.tokens_generated
    call.cancel()
    cancelled_at = time.perf_counter()
    await poll(lambda: not backend.active_generations, 2.0)
    assert time.perf_counter() - cancelled_at < 0.05
    assert backend.tokens_generated - produced_at_cancel < 50
    assert backend.tokens_generated < 480
    entry = lab.entry("lm", 1)
    await asyncio.sleep(0.01)
    assert entry.in_flight == 0  # the lease (batch slot) was released


async def test_a_passed_deadline_stops_a_unary_generation(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    backend = lab.backend("lm", 1)
    before = backend.tokens_generated
    request = generate_request("lm", max_new_tokens=480, skip_cache=True)
    try:
        await lab.stub.Generate(request, timeout=0.05)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await poll(lambda: not backend.active_generations, 2.0)
    assert backend.tokens_generated - before < 480
