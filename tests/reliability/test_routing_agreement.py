"""Gateway and inference pick the same version for the same routing key (issue 21, defect 13).

Both import the one chooser, `lattice.routing.pick_weighted`; this pins that
end to end: a model with two versions online at 50/50, and for each key the
version the gateway routes to equals the one inference picks for an unpinned
request sent to it directly.
"""

from __future__ import annotations

import time

import grpc

import lattice
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.suite.tiny_models import build_tiny_causal_lm
from tests.sdk.real_stack import RealStack

MODEL = "split-gpt"


def _deploy_two_versions(stack: RealStack, tmp_path) -> None:
    with lattice.Client(stack.gateway, stack.token) as client:
        client.create_model(MODEL, "text-generation")
        for seed in (1, 2):
            client.register_version(MODEL, build_tiny_causal_lm(tmp_path / f"v{seed}", seed=seed))
        client.deploy(MODEL, {1: 50, 2: 50}, reason="split")


def _version(stub, key: str, metadata) -> int:
    return stub.Generate(_request(key), metadata=metadata, timeout=30).model_version


def test_gateway_and_inference_choose_the_same_version_per_key(stack, tmp_path):
    _deploy_two_versions(stack, tmp_path)
    auth = [("authorization", f"Bearer {stack.token}")]
    internal = [("authorization", f"Bearer {stack.token_for(stack.address('inference'))}")]
    with (
        grpc.insecure_channel(stack.gateway) as gateway_channel,
        grpc.insecure_channel(stack.address("inference")) as inference_channel,
    ):
        through_gateway = inference_pb2_grpc.InferenceServiceStub(gateway_channel)
        direct = inference_pb2_grpc.InferenceServiceStub(inference_channel)
        deadline = time.monotonic() + 60
        while True:  # until both versions are loaded and routed on both sides
            try:
                # The gateway learns what is loaded by polling: wait for its view too
                # (checking the direct side alone failed once in a full run).
                direct_seen = {_version(direct, f"warm-{i}", internal) for i in range(8)}
                routed_seen = {_version(through_gateway, f"warm-{i}", auth) for i in range(8)}
                if direct_seen == routed_seen == {1, 2}:
                    break
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "both versions never came online"
            time.sleep(0.2)
        picks = {}
        for i in range(24):
            key = f"user-{i}"
            picks[key] = (_version(through_gateway, key, auth), _version(direct, key, internal))
    assert all(g == d for g, d in picks.values()), picks
    assert {g for g, _ in picks.values()} == {1, 2}


def _request(key: str) -> inference_pb2.GenerateRequest:
    request = inference_pb2.GenerateRequest(
        model=MODEL, prompt="hello", routing_key=key, skip_cache=True
    )
    request.parameters.max_new_tokens = 1
    return request
