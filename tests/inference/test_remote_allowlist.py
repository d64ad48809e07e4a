"""Inference checks a version's remote backend against its own allowlist again
before connecting: a registry row alone never makes it dial a host."""

from __future__ import annotations

import asyncio

from lattice.v1 import common_pb2, inference_pb2, registry_pb2
from services.inference.serving import VersionState
from services.suite.embedded import GENERATION, Lab
from tests.support.listener import CountingListener


async def test_inference_refuses_a_backend_outside_its_allowlist(tmp_path):
    # The registry here allows loopback; this inference only its real Triton.
    lab = await Lab(tmp_path, remote_allowlist=("triton.gpu.internal:8001",)).start()
    try:
        async with CountingListener() as canary:
            await lab.create_model("remote", GENERATION)
            await lab.reg.CreateVersion(
                registry_pb2.CreateVersionRequest(
                    model_name="remote",
                    artifact_uri=f"triton://{canary.address}/remote",
                    format=common_pb2.ARTIFACT_FORMAT_TRITON,
                )
            )
            await lab.deploy("remote", {1: 100})
            await lab.wait_state("remote", 1, VersionState.FAILED)
            listing = await lab.stub.ListLoadedModels(inference_pb2.ListLoadedModelsRequest())
            (model,) = listing.models
            assert "remote allowlist" in model.error
            await asyncio.sleep(0.2)
            assert canary.connections == 0
    finally:
        await lab.stop()
