"""The HTTP front is the gRPC front's pipeline: one quota, one request id."""

from __future__ import annotations

import asyncio

import grpc
import openai
import pytest

import lattice
from lattice.tokens import mint_dev_token
from lattice.v1 import inference_pb2, inference_pb2_grpc
from tests.sdk.real_stack import MODEL, SECRET


def test_the_request_quota_is_exact_across_grpc_and_http(strict_gateway):
    """4 requests per window: 2 over gRPC + 2 over HTTP pass, the 5th fails on either."""
    token = mint_dev_token(SECRET, tenant="shared-quota", scopes=["inference:invoke"])
    http = openai.OpenAI(base_url=f"{strict_gateway.http.url}/v1", api_key=token, max_retries=0)
    with lattice.Client(strict_gateway.address, token) as grpc_client:
        grpc_client.generate(MODEL, "one", max_new_tokens=1)
        http.completions.create(model=MODEL, prompt="two", max_tokens=1)
        grpc_client.generate(MODEL, "three", max_new_tokens=1)
        http.completions.create(model=MODEL, prompt="four", max_tokens=1)
        with pytest.raises(openai.RateLimitError):
            http.completions.create(model=MODEL, prompt="five", max_tokens=1)
        with pytest.raises(lattice.ResourceExhausted):
            grpc_client.generate(MODEL, "five", max_new_tokens=1)


def _generate_calls_seen_by_inference(stack) -> float:
    stack.run(asyncio.sleep(0.05))  # the RPC bookkeeping runs just after each call
    registry = stack.servers["inference"].metrics_registry
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "lattice_rpc_requests"
        for sample in metric.samples
        if sample.labels.get("method", "").endswith("/Generate") and sample.name.endswith("_total")
    )


def test_nothing_reaches_inference_when_authentication_fails(stack, http_url, openai_client):
    openai_client.completions.create(model=MODEL, prompt="counted", max_tokens=1)
    before = _generate_calls_seen_by_inference(stack)
    assert before >= 1  # the measure can see a forwarded call
    refused = openai.OpenAI(base_url=f"{http_url}/v1", api_key="x", max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.AuthenticationError):
            refused.completions.create(model=MODEL, prompt="hi", max_tokens=1)
    assert _generate_calls_seen_by_inference(stack) == before


def test_grpc_responses_return_the_request_id_too(stack):
    """Success or failure, the gRPC caller gets x-request-id in trailing metadata."""
    metadata = (("authorization", f"Bearer {stack.token}"), ("x-request-id", "req-grpc-1"))
    with grpc.insecure_channel(stack.gateway) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        request = inference_pb2.GenerateRequest(
            model=MODEL,
            prompt="hi",
            parameters=inference_pb2.GenerationParameters(max_new_tokens=1),
        )
        _, call = stub.Generate.with_call(request, metadata=metadata)
        assert ("x-request-id", "req-grpc-1") in call.trailing_metadata()
        with pytest.raises(grpc.RpcError) as failed:
            stub.Generate(
                inference_pb2.GenerateRequest(model="no-such-model", prompt="hi"), metadata=metadata
            )
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        assert ("x-request-id", "req-grpc-1") in failed.value.trailing_metadata()
        generated = dict(
            stub.Generate.with_call(request, metadata=metadata[:1])[1].trailing_metadata()
        )
        assert len(generated["x-request-id"]) == 32
