"""AsyncClient: the same calls, awaited, against the same real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from google.rpc import error_details_pb2

import lattice
from lattice.v1 import registry_pb2, trainer_pb2
from tests.support.sdk_servers import REMOTE_BACKEND, TEST_TOKEN

#: A version whose artifact lives on a remote backend the registry allows.
REMOTE_URI = f"triton://{REMOTE_BACKEND}/m"


@pytest.fixture
async def aclient(services) -> AsyncIterator[lattice.AsyncClient]:
    """The scripted inference and trainer."""
    async with lattice.AsyncClient(services.address, TEST_TOKEN) as client:
        yield client


@pytest.fixture
async def registry_aclient(services) -> AsyncIterator[lattice.AsyncClient]:
    """The real registry, as the tenant `REGISTRY_CALLER`."""
    async with lattice.AsyncClient(services.registry_address, services.registry_token()) as client:
        yield client


async def test_generate_stream_embed(aclient):
    result = await aclient.generate("tiny", "hello", max_new_tokens=2)
    assert isinstance(result, lattice.Generation) and result.text == "w0 w1"
    deltas = [d async for d in aclient.stream("tiny", "hello", max_new_tokens=3)]
    assert "".join(d.text for d in deltas) == "w0 w1 w2"
    assert deltas[-1].finish_reason == "length"
    vectors = (await aclient.embed("encoder", ["abc"])).vectors
    assert vectors == [[3.0, 1.0, 0.0]]
    assert (await aclient.loaded_models()).models[0].model_name == "tiny"


async def test_breaking_out_of_async_for_stops_generation_server_side(aclient, services):
    inference = services.inference
    async for delta in aclient.stream("tiny", "hi", max_new_tokens=200):
        if delta.index == 2:
            break
    cancelled = await asyncio.to_thread(inference.stream_cancelled.wait, 5)
    assert cancelled, "the server never saw the cancellation"
    produced = inference.produced
    assert produced < 10
    await asyncio.sleep(0.3)
    assert inference.produced == produced
    assert not inference.stream_finished.is_set()


async def test_registry_and_trainer(registry_aclient, aclient, tmp_path):
    registry = registry_aclient
    await registry.create_model("async-gpt", "embedding")
    assert (await registry.get_model("async-gpt")).task == 2
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"x" * 3000)
    version = await registry.register_version("async-gpt", tmp_path / "m", tags={"t": "1"})
    assert version.version == 1
    data = await registry.download_artifact(version.artifact_uri, tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == b"x" * 3000 and len(data) > 3000
    assert [v.version for v in await registry.list_versions("async-gpt")] == [1]
    await registry.set_alias("async-gpt", "prod", 1)
    assert (await registry.list_aliases("async-gpt"))[0].alias == "prod"
    await registry.deploy("async-gpt", {1: 100}, reason="first")
    assert (await registry.get_deployment("async-gpt")).routes[0].weight == 100
    assert (await registry.history("async-gpt"))[0].reason == "first"
    await registry.set_policy("async-gpt", max_prompt_tokens=128)
    assert (await registry.get_policy("async-gpt")).max_prompt_tokens == 128
    assert (await registry.resolve("async-gpt")).deployment.routes[0].version == 1
    assert "async-gpt" in [m.name for m in await registry.list_models()]
    assert "async-gpt" in [d.model_name for d in await registry.list_deployments()]

    async with registry.watch() as events:
        async for event in events:
            if event.type == registry_pb2.WATCH_EVENT_TYPE_SYNCED:
                break

    dataset = await aclient.prepare_dataset("acorpus", ["docs/*.txt"], tokenizer="wordpiece")
    assert dataset.spec.sources[0].path == "docs/*.txt"
    assert (await aclient.get_dataset(dataset.id)).id == dataset.id
    assert dataset.id in [d.id for d in await aclient.list_datasets()]
    job = await aclient.submit_job(
        {"family": "MODEL_FAMILY_BERT_MASKED_LM", "datasetId": dataset.id}
    )
    events = [e async for e in aclient.watch_job(job.id)]
    assert events[-1].job.state == trainer_pb2.JOB_STATE_SUCCEEDED
    assert (await aclient.wait_job(job.id)).state == trainer_pb2.JOB_STATE_SUCCEEDED
    assert (await aclient.get_job(job.id)).id == job.id
    assert job.id in [j.id for j in await aclient.list_jobs()]
    assert (await aclient.cancel_job(job.id)).state == trainer_pb2.JOB_STATE_SUCCEEDED


async def test_async_errors_carry_details(aclient, registry_aclient, services):
    with pytest.raises(lattice.ResourceExhausted) as exhausted:
        await aclient.embed("limited", ["x"])
    assert exhausted.value.retry_after == pytest.approx(7.0)
    with pytest.raises(lattice.NotFound):
        async for _ in aclient.stream("missing", "x"):
            pass
    with pytest.raises(lattice.NotFound):
        await registry_aclient.deploy("tiny-missing", {})
    with pytest.raises(lattice.NotFound):
        await aclient.get_job("job-none")
    async with lattice.AsyncClient(services.address) as anonymous:
        with pytest.raises(lattice.Unauthenticated):
            await anonymous.generate("tiny", "x")


async def test_delete_model_refused_while_online(registry_aclient):
    aclient = registry_aclient
    await aclient.create_model("async-online")
    await aclient.create_version("async-online", artifact_uri=REMOTE_URI, artifact_digest="b" * 64)
    await aclient.deploy("async-online", {1: 100})
    with pytest.raises(lattice.FailedPrecondition):
        await aclient.delete_model("async-online")
    await aclient.deploy("async-online", {})
    await aclient.delete_model("async-online")
    with pytest.raises(lattice.NotFound):
        await aclient.get_model("async-online")


async def test_bad_weights_are_invalid_argument_naming_the_field(registry_aclient):
    aclient = registry_aclient
    await aclient.create_model("async-weights")
    await aclient.create_version("async-weights", artifact_uri=REMOTE_URI, artifact_digest="c" * 64)
    with pytest.raises(lattice.InvalidArgument) as invalid:
        await aclient.deploy("async-weights", {1: 50})
    assert invalid.value.field == "routes"
    assert any(isinstance(d, error_details_pb2.BadRequest) for d in invalid.value.details)
