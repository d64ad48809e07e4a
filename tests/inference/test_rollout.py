"""Registry-driven loading: rollouts under load, tampered artifacts, drains."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from lattice.v1 import inference_pb2, registry_pb2
from services.inference.serving import VersionState
from services.suite.embedded import deploy_lm, generate_request, poll


@pytest.mark.slow
async def test_rollout_v1_v2_v1_under_50_clients_fails_nothing(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    await lab.register("lm", model_dirs["lm2"])
    request = generate_request("lm", prompt="Hello", max_new_tokens=2)
    served: list[int] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                response = await lab.stub.Generate(request, timeout=20)
                served.append(response.model_version)
            except grpc.aio.AioRpcError as error:
                failures.append(error)

    clients = [asyncio.create_task(client()) for _ in range(50)]
    try:
        await asyncio.sleep(0.5)
        await lab.deploy("lm", {2: 100})
        await lab.wait_state("lm", 2, VersionState.READY)
        await lab.wait_unloaded("lm", 1)
        await asyncio.sleep(0.2)  # responses already on the wire still arrive
        mark = len(served)
        await asyncio.sleep(0.5)
        assert set(served[mark:]) == {2}
        await lab.deploy("lm", {1: 100})
        await lab.wait_state("lm", 1, VersionState.READY)
        await lab.wait_unloaded("lm", 2)
        await asyncio.sleep(0.2)
        mark = len(served)
        await asyncio.sleep(0.5)
        assert set(served[mark:]) == {1}
    finally:
        stop.set()
        await asyncio.gather(*clients)
    assert failures == []
    assert set(served) == {1, 2}
    assert len(served) > 200


async def test_a_tampered_artifact_is_refused_and_the_previous_version_keeps_serving(
    lab, model_dirs
):
    await deploy_lm(lab, model_dirs)
    v2 = await lab.register("lm", model_dirs["lm2"])
    blob = lab.tampered_blob(v2.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the stored artifact
    blob.write_bytes(bytes(data))

    await lab.deploy("lm", {2: 100})
    await lab.wait_state("lm", 2, VersionState.FAILED)
    listing = await lab.stub.ListLoadedModels(inference_pb2.ListLoadedModelsRequest())
    states = {m.version: m for m in listing.models}
    assert states[2].state == inference_pb2.LOADED_MODEL_STATE_FAILED
    assert "failed verification" in states[2].error and v2.digest in states[2].error
    assert states[1].state == inference_pb2.LOADED_MODEL_STATE_READY
    for _ in range(5):
        response = await lab.stub.Generate(generate_request("lm", max_new_tokens=2))
        assert response.model_version == 1
    # A router with an older view may still pin v1: it is served, not refused.
    pinned = await lab.stub.Generate(generate_request("lm:1", max_new_tokens=2))
    assert pinned.model_version == 1
    # Nothing of the refused artifact was unpacked.
    assert not (lab.root / "inference" / "artifacts" / v2.digest).exists()


async def test_going_offline_finishes_in_flight_requests_then_unloads(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    stream = lab.stub.GenerateStream(
        inference_pb2.GenerateStreamRequest(
            model="lm",
            prompt="Once upon a time",  # greedy: no EOS within 400 tokens
            parameters=inference_pb2.GenerationParameters(max_new_tokens=400),
        )
    )
    first = await stream.read()
    assert first.model_version == 1
    await lab.deploy("lm", {})  # offline
    await lab.wait_state("lm", 1, VersionState.DRAINING)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await lab.stub.Generate(generate_request("lm", max_new_tokens=2))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    last = first
    while (message := await stream.read()) != grpc.aio.EOF:  # the in-flight stream completes
        last = message
    assert last.usage.completion_tokens == 400
    assert last.finish_reason == inference_pb2.FINISH_REASON_LENGTH
    await lab.wait_unloaded("lm", 1)


async def test_weights_split_traffic_and_routing_keys_stick(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    await lab.register("lm", model_dirs["lm2"])
    await lab.deploy("lm", {1: 50, 2: 50})
    await lab.wait_state("lm", 2, VersionState.READY)
    versions = [
        (await lab.stub.Generate(generate_request("lm", max_new_tokens=1))).model_version
        for _ in range(40)
    ]
    assert set(versions) == {1, 2}
    sticky = {
        (
            await lab.stub.Generate(generate_request("lm", max_new_tokens=1, routing_key="user-7"))
        ).model_version
        for _ in range(10)
    }
    assert len(sticky) == 1
    pinned = await lab.stub.Generate(generate_request("lm:2", max_new_tokens=1))
    assert pinned.model_version == 2
    await lab.reg.SetAlias(
        registry_pb2.SetAliasRequest(model_name="lm", alias="champion", version=1)
    )
    await poll(lambda: lab.manager.view.alias("lm", "champion") is not None, 5.0)
    aliased = await lab.stub.Generate(generate_request("lm@champion", max_new_tokens=1))
    assert aliased.model_version == 1
