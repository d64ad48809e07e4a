"""Readiness: an inference replica reports SERVING only once it knows the registry's state."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.inference.server import InferenceSettings
from services.inference.server import build_server as build_inference
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.suite.embedded import deploy_lm
from services.suite.ports import free_port
from tests.support.identity import signed_channel

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_not_serving_until_the_registry_view_is_synced(tmp_path):
    registry_port = free_port()  # nothing listens there yet
    inference = await build_inference(
        InferenceSettings(
            port=0,
            data_dir=tmp_path,
            registry_address=f"127.0.0.1:{registry_port}",
            log_json=False,
            device="cpu",
        )
    )
    await inference.start()
    registry = None
    channel = signed_channel(inference.address, tmp_path, "inference")
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "lattice.v1.InferenceService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == NOT_SERVING
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Generate(inference_pb2.GenerateRequest(model="m", prompt="hi"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "not synced with the registry" in refused.value.details()

        registry = await build_registry(
            RegistrySettings(port=registry_port, data_dir=tmp_path, log_json=False)
        )
        await registry.start()
        deadline = time.monotonic() + 20
        status = NOT_SERVING
        while status != SERVING and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
        assert status == SERVING
    finally:
        await channel.close()
        await inference.stop(0)
        if registry is not None:
            await registry.stop(0)


async def test_not_serving_until_the_deployed_versions_are_loaded(lab, model_dirs, tmp_path):
    """Issue 21, defect 6: a restarted replica said SERVING while its models were
    still loading, and requests sent to it waited for the load."""
    await deploy_lm(lab, model_dirs)
    await lab.register("lm", model_dirs["lm2"])
    await lab.deploy("lm", {1: 50, 2: 50})
    replica = await build_inference(
        InferenceSettings(
            port=0,
            data_dir=tmp_path / "second",
            registry_address=lab.registry.address,
            log_json=False,
            device="cpu",
            key_ring_file=str(lab.root / DEFAULT_KEY_RING_PATH),  # one suite, one ring
        )
    )
    await replica.start()
    channel = signed_channel(replica.address, lab.root, "inference")
    try:
        updates = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        while (await updates.read()).status != SERVING:
            pass
        loaded = await inference_pb2_grpc.InferenceServiceStub(channel).ListLoadedModels(
            inference_pb2.ListLoadedModelsRequest(), timeout=5
        )
        states = {(m.model_name, m.version): m.state for m in loaded.models}
        ready = inference_pb2.LOADED_MODEL_STATE_READY
        assert states == {("lm", 1): ready, ("lm", 2): ready}
        updates.cancel()
    finally:
        await channel.close()
        await replica.stop(0)
