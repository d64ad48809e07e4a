"""The gateway in front of the real inference service with a tiny torch model (CPU).

Checks what the EchoInference tests cannot: the real service's streaming deltas
and usage are what the token quota charges, and cancelling through the gateway
stops real generation early.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from lattice.artifacts import iter_chunks, pack_directory, sha256_hex
from lattice.v1 import common_pb2, inference_pb2, registry_pb2
from services.inference.server import InferenceSettings
from services.inference.server import build_server as build_inference
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.suite.tiny_models import build_tiny_causal_lm
from tests.gateway.support import bearer, token

pytestmark = pytest.mark.slow


def _upload(data: bytes):
    header = registry_pb2.ArtifactHeader(
        digest=sha256_hex(data), size_bytes=len(data), content_type="application/x-tar"
    )
    yield registry_pb2.UploadArtifactRequest(header=header)
    for part in iter_chunks(data, 256 * 1024):
        yield registry_pb2.UploadArtifactRequest(chunk=part)


async def test_real_inference_usage_is_what_the_quota_charges(stack, redis_server, tmp_path):
    registry = await stack.start_registry()
    await registry.CreateModel(
        registry_pb2.CreateModelRequest(
            model=registry_pb2.Model(name="tiny", task=common_pb2.MODEL_TASK_TEXT_GENERATION)
        )
    )
    data = pack_directory(build_tiny_causal_lm(tmp_path / "lm", seed=1))
    uploaded = await registry.UploadArtifact(_upload(data))
    await registry.CreateVersion(
        registry_pb2.CreateVersionRequest(
            model_name="tiny",
            artifact_uri=uploaded.artifact_uri,
            artifact_digest=uploaded.digest,
            format=common_pb2.ARTIFACT_FORMAT_TRANSFORMERS,
        )
    )
    await registry.UpdateDeployment(
        registry_pb2.UpdateDeploymentRequest(
            model_name="tiny", routes=[registry_pb2.Route(version=1, weight=100)]
        )
    )
    inference = await build_inference(
        InferenceSettings(
            port=0,
            data_dir=tmp_path / "inf",
            key_ring_file=str(stack.tmp / "reg" / DEFAULT_KEY_RING_PATH),
            log_json=False,
            grace_seconds=0.2,
            registry_address=stack.registry.address,
            device="cpu",
            backend_threads=1,
        )
    )
    await inference.start()
    stack.others.append(inference)
    gateway = await stack.start_gateway(
        redis_url=redis_server.url, quota_tokens=100_000, inference_addresses=(inference.address,)
    )
    stub = stack.inference_stub(gateway)
    quotas = gateway.gateway._quotas
    acme = bearer(token())
    request = inference_pb2.GenerateRequest(
        model="tiny",
        prompt="the robot",
        skip_cache=True,
        parameters=inference_pb2.GenerationParameters(max_new_tokens=6),
    )
    for _ in range(300):  # the replica loads the version in the background
        try:
            response = await stub.Generate(request, metadata=acme)
            break
        except grpc.aio.AioRpcError as error:
            if error.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
            ):
                raise
            await asyncio.sleep(0.1)
    assert (response.model_name, response.model_version) == ("tiny", 1)
    assert response.usage.total_tokens > 0
    await gateway.gateway.settle()
    charged = (await quotas.usage("acme"))[1]
    assert charged == response.usage.total_tokens

    # A whole stream is charged its final usage.
    stream_request = inference_pb2.GenerateStreamRequest(
        model="tiny",
        prompt="the robot",
        skip_cache=True,
        parameters=inference_pb2.GenerationParameters(max_new_tokens=8),
    )
    messages = [m async for m in stub.GenerateStream(stream_request, metadata=acme)]
    usage = messages[-1].usage
    assert usage.total_tokens > 0
    await gateway.gateway.settle()
    assert (await quotas.usage("acme"))[1] == charged + usage.total_tokens
    charged += usage.total_tokens

    # A cancelled stream is charged what it delivered, far below what was asked.
    long = stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(
            model="tiny",
            prompt="the robot",
            skip_cache=True,
            parameters=inference_pb2.GenerationParameters(max_new_tokens=2000),
        ),
        metadata=acme,
    )
    delivered = 0
    while delivered < 3:
        message = await long.read()
        delivered += bool(message.delta)
    long.cancel()
    await asyncio.sleep(0.3)
    await gateway.gateway.settle()
    extra = (await quotas.usage("acme"))[1] - charged
    # What the client read (3) plus what was already in flight when the cancel landed.
    assert 3 <= extra <= 100, extra
