"""A version the real inference service cannot load is recorded in its deployment history.

Registry, real inference (a tiny torch model) and the gateway on loopback: version 2
is a well-formed artifact whose weights file is garbage. Deployed as a canary, it
fails to load; the owner reads why through the gateway with the SDK (a reason with
no server path and no exception class name), version 1 keeps serving every request,
and another tenant sees nothing of it.
"""

from __future__ import annotations

import asyncio
import shutil

import grpc
import pytest

import lattice
from lattice.artifacts import iter_chunks, pack_directory, sha256_hex
from lattice.v1 import common_pb2, inference_pb2, registry_pb2, registry_pb2_grpc
from services.inference.server import InferenceSettings
from services.inference.server import build_server as build_inference
from services.suite.tiny_models import build_tiny_causal_lm
from tests.gateway.support import ALL, bearer, token

pytestmark = pytest.mark.slow

FAILED = registry_pb2.DEPLOYMENT_EVENT_KIND_VERSION_LOAD_FAILED
_LOADING = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION)


def _upload(data: bytes):
    header = registry_pb2.ArtifactHeader(
        digest=sha256_hex(data), size_bytes=len(data), content_type="application/x-tar"
    )
    yield registry_pb2.UploadArtifactRequest(header=header)
    for part in iter_chunks(data, 256 * 1024):
        yield registry_pb2.UploadArtifactRequest(chunk=part)


async def _register(registry, directory) -> None:
    uploaded = await registry.UploadArtifact(_upload(pack_directory(directory)))
    await registry.CreateVersion(
        registry_pb2.CreateVersionRequest(
            model_name="tiny",
            artifact_uri=uploaded.artifact_uri,
            artifact_digest=uploaded.digest,
            format=common_pb2.ARTIFACT_FORMAT_TRANSFORMERS,
        )
    )


def _history(address: str, tenant: str) -> list[registry_pb2.DeploymentHistoryEntry]:
    with lattice.Client(address, token(tenant, ALL)) as client:
        return client.history("tiny")


async def _failures(address: str) -> list[registry_pb2.DeploymentHistoryEntry]:
    entries = await asyncio.to_thread(_history, address, "acme")
    return [e for e in entries if e.kind == FAILED]


async def test_a_version_that_fails_to_load_says_why_in_its_history(stack, tmp_path):
    registry = await stack.start_registry()
    await registry.CreateModel(
        registry_pb2.CreateModelRequest(
            model=registry_pb2.Model(
                name="tiny", task=common_pb2.MODEL_TASK_TEXT_GENERATION, tenant="acme"
            )
        )
    )
    good = build_tiny_causal_lm(tmp_path / "lm", seed=1)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(good, corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(b"\x07" * weights.stat().st_size)  # the right size, garbage bytes
    await _register(registry, good)
    await _register(registry, corrupt)
    await registry.UpdateDeployment(
        registry_pb2.UpdateDeploymentRequest(
            model_name="tiny",
            routes=[
                registry_pb2.Route(version=1, weight=50),
                registry_pb2.Route(version=2, weight=50),
            ],
        )
    )
    inference = await build_inference(
        InferenceSettings(
            port=0,
            data_dir=tmp_path / "inf",
            key_ring_file=stack.key_ring_file,
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
        inference_addresses=(inference.address,), replica_poll_seconds=0.1
    )

    failures: list[registry_pb2.DeploymentHistoryEntry] = []
    for _ in range(300):  # the replica loads (and fails to load) in the background
        failures = [
            e
            for e in await asyncio.to_thread(_history, gateway.address, "acme")
            if e.kind == FAILED
        ]
        if failures:
            break
        await asyncio.sleep(0.1)
    (event,) = failures
    assert event.version == 2 and event.model_name == "tiny" and event.tenant == "acme"
    assert event.replica.endswith(f":{inference.port}")
    assert event.actor == "service:inference"
    assert event.to_deployment == event.from_deployment  # the deployment itself is unchanged
    assert event.reason.startswith(f"version 2 failed to load on {event.replica}: ")
    assert "corrupt" in event.reason
    assert str(tmp_path) not in event.reason and "/tmp" not in event.reason
    assert "SafetensorError" not in event.reason and "Traceback" not in event.reason
    # The replica shows the same path-free reason.
    loaded = {m.version: m for m in (await _loaded(stack, gateway)).models}
    assert loaded[2].state == inference_pb2.LOADED_MODEL_STATE_FAILED
    assert loaded[2].error in event.reason

    # Version 1 keeps serving every request; the broken canary gets none.
    stub = stack.inference_stub(gateway)
    request = inference_pb2.GenerateRequest(
        model="tiny",
        prompt="the robot",
        skip_cache=True,
        parameters=inference_pb2.GenerationParameters(max_new_tokens=2),
    )
    await _wait_served(stub, request)
    await asyncio.sleep(0.5)  # a few replica polls: the gateway has seen v1 READY, v2 FAILED
    versions = [
        (await stub.Generate(request, metadata=bearer(token()))).model_version for _ in range(20)
    ]
    assert versions == [1] * 20

    # Retries with backoff record nothing new; another tenant sees nothing at all.
    await asyncio.sleep(2.5)
    again = [
        e for e in await asyncio.to_thread(_history, gateway.address, "acme") if e.kind == FAILED
    ]
    assert len(again) == 1
    assert await asyncio.to_thread(_history, gateway.address, "globex") == []

    # A tenant cannot write load events, even about its own model.
    registry_stub = _registry_stub(stack, gateway)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await registry_stub.ReportVersionLoad(
            registry_pb2.ReportVersionLoadRequest(model_name="tiny", version=1, reason="fake"),
            metadata=bearer(token("acme", ALL)),
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _loaded(stack, gateway) -> inference_pb2.ListLoadedModelsResponse:
    stub = stack.inference_stub(gateway)
    admin = bearer(token("ops", ("admin",)))
    return await stub.ListLoadedModels(inference_pb2.ListLoadedModelsRequest(), metadata=admin)


async def _wait_served(stub, request) -> None:
    for _ in range(300):
        try:
            await stub.Generate(request, metadata=bearer(token()))
            return
        except grpc.aio.AioRpcError as error:
            if error.code() not in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.FAILED_PRECONDITION,
            ):
                raise
            await asyncio.sleep(0.1)


def _registry_stub(stack, gateway) -> registry_pb2_grpc.ModelRegistryServiceStub:
    return registry_pb2_grpc.ModelRegistryServiceStub(stack.channel(gateway.address))
