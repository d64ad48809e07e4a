"""Tensor, pipeline and hybrid parallel jobs on real torchrun process groups
(gloo, CPU): the same losses as one process with the same seed and data, and a
registered model that is plain GPT-2."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

from lattice.artifacts import unpack_to
from lattice.v1 import registry_pb2, trainer_pb2, trainer_pb2_grpc
from services.trainer.server import build_server as build_trainer
from tests.support.identity import caller_channel

from .conftest import docstring_spec, tiny_gpt2_job, trainer_settings, wait_for_job

pytestmark = pytest.mark.slow

STEPS = 20


@pytest.fixture
async def wide_trainer(tmp_path, registry_server):
    """A trainer that lets 4 processes share this 2-core machine (HYBRID 2 x 2)."""
    settings = trainer_settings(
        tmp_path / "trainer-data", registry_server.address, max_processes_per_node=4, max_nodes=2
    )
    server = await build_trainer(settings)
    await server.start()
    async with caller_channel(server) as channel:
        yield trainer_pb2_grpc.TrainerServiceStub(channel)
    await server.stop(0)


async def run_job(trainer, dataset_id: str, name: str, **distributed) -> list[float]:
    family = distributed.pop("family", trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM)
    spec = tiny_gpt2_job(
        dataset_id,
        name,
        family=family,
        hyperparameters__max_steps=STEPS,
        hyperparameters__warmup_steps=2,
        architecture__dropout=0.0,  # dropout masks are per layout; the maths is not
        checkpoint_interval_steps=10,
        eval_interval_steps=0,
        hyperparameters__batch_size=distributed.pop("batch_size", 8),
        **{f"distributed__{k}": v for k, v in distributed.items()},
    )
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id, timeout=400)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    stream = trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
    return [e.metrics.loss async for e in stream if e.HasField("metrics")]


async def load(registry, name: str, target, loader=AutoModelForCausalLM) -> torch.nn.Module:
    (version,) = (
        await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name=name))
    ).versions
    stream = registry.DownloadArtifact(
        registry_pb2.DownloadArtifactRequest(digest=version.artifact_digest)
    )
    data = b"".join([m.chunk async for m in stream if m.WhichOneof("payload") == "chunk"])
    unpack_to(data, target)
    return loader.from_pretrained(target).eval()


async def test_tensor_parallel_two_ranks_matches_one_process_and_exports_plain_gpt2(
    tmp_path, trainer, registry
):
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    single = await run_job(trainer, dataset.id, "single-gpt")
    split = await run_job(
        trainer,
        dataset.id,
        "tp-gpt",
        processes_per_node=2,
        strategy=trainer_pb2.DISTRIBUTED_STRATEGY_TENSOR_PARALLEL,
    )
    assert len(single) == len(split) == STEPS
    assert split == pytest.approx(single, rel=2e-3), list(zip(single, split, strict=True))
    assert split[-1] < split[0] - 0.5  # it learnt
    # The registered artifact is a plain GPT-2: the same function as the
    # single-process model's.
    plain = await load(registry, "single-gpt", tmp_path / "single")
    tensor_parallel = await load(registry, "tp-gpt", tmp_path / "tp")
    inputs = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        expected, got = plain(input_ids=inputs).logits, tensor_parallel(input_ids=inputs).logits
    assert torch.allclose(expected, got, atol=5e-2), (expected - got).abs().max()


async def test_pipeline_two_stages_matches_one_process_and_exports_plain_gpt2(
    tmp_path, trainer, registry
):
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    single = await run_job(trainer, dataset.id, "single-pp-ref")
    piped = await run_job(
        trainer,
        dataset.id,
        "pp-gpt",
        processes_per_node=2,
        pipeline_micro_batches=4,
        strategy=trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL,
    )
    assert piped == pytest.approx(single, rel=2e-3), list(zip(single, piped, strict=True))
    plain = await load(registry, "single-pp-ref", tmp_path / "single")
    pipelined = await load(registry, "pp-gpt", tmp_path / "pp")
    inputs = torch.randint(0, 100, (2, 16))
    with torch.no_grad():
        expected, got = plain(input_ids=inputs).logits, pipelined(input_ids=inputs).logits
    assert torch.allclose(expected, got, atol=5e-2), (expected - got).abs().max()


async def test_pipeline_1f1b_matches_one_process(trainer):
    """1F1B reorders forwards and backwards, not the maths: the losses of GPipe's
    single-process reference."""
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    single = await run_job(trainer, dataset.id, "single-1f1b-ref")
    one_f_one_b = await run_job(
        trainer,
        dataset.id,
        "pp-1f1b",
        processes_per_node=2,
        pipeline_micro_batches=4,
        pipeline_schedule=trainer_pb2.PIPELINE_SCHEDULE_1F1B,
        strategy=trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL,
    )
    assert one_f_one_b == pytest.approx(single, rel=2e-3), list(
        zip(single, one_f_one_b, strict=True)
    )


async def test_bert_tensor_and_pipeline_parallel_match_one_process_and_export_plain_bert(
    tmp_path, trainer, registry
):
    """BERT's plans: TP=2 (q/k/v and the feed-forward split) and PP=2 (encoder
    layers in two stages, the batch's masked-token mean kept exact across
    micro-batches) train as one process does, masks and all."""
    dataset = (
        await trainer.PrepareDataset(
            trainer_pb2.PrepareDatasetRequest(
                spec=docstring_spec(kind=trainer_pb2.TOKENIZER_KIND_WORDPIECE)
            )
        )
    ).dataset
    bert = trainer_pb2.MODEL_FAMILY_BERT_MASKED_LM
    single = await run_job(trainer, dataset.id, "bert-single", family=bert)
    split = await run_job(
        trainer,
        dataset.id,
        "bert-tp",
        family=bert,
        processes_per_node=2,
        strategy=trainer_pb2.DISTRIBUTED_STRATEGY_TENSOR_PARALLEL,
    )
    piped = await run_job(
        trainer,
        dataset.id,
        "bert-pp",
        family=bert,
        processes_per_node=2,
        pipeline_micro_batches=4,
        strategy=trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL,
    )
    assert split == pytest.approx(single, rel=2e-3), list(zip(single, split, strict=True))
    assert piped == pytest.approx(single, rel=2e-3), list(zip(single, piped, strict=True))
    assert single[-1] < single[0] - 0.5  # it learnt
    inputs = torch.randint(5, 100, (2, 16))
    plain = await load(registry, "bert-single", tmp_path / "single", AutoModelForMaskedLM)
    with torch.no_grad():
        expected = plain(input_ids=inputs).logits
        for name in ("bert-tp", "bert-pp"):
            got = (await load(registry, name, tmp_path / name, AutoModelForMaskedLM))(
                input_ids=inputs
            ).logits
            assert torch.allclose(expected, got, atol=5e-2), (name, (expected - got).abs().max())


async def test_hybrid_two_by_two_matches_one_process_with_the_same_global_batch(wide_trainer):
    trainer = wide_trainer
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    # 2 data-parallel rows of batch 8 read exactly the 16 blocks one process reads.
    single = await run_job(trainer, dataset.id, "single-16", batch_size=16)
    hybrid = await run_job(
        trainer,
        dataset.id,
        "hybrid-gpt",
        processes_per_node=4,
        tensor_parallel_size=2,
        strategy=trainer_pb2.DISTRIBUTED_STRATEGY_HYBRID,
    )
    assert hybrid == pytest.approx(single, rel=2e-3), list(zip(single, hybrid, strict=True))


async def test_killed_tensor_parallel_rank_resumes_under_the_same_strategy_and_registers_once(
    trainer, trainer_server, registry
):
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    spec = tiny_gpt2_job(
        dataset.id,
        "tp-resumed",
        hyperparameters__max_steps=30,
        distributed__processes_per_node=2,
        distributed__strategy=trainer_pb2.DISTRIBUTED_STRATEGY_TENSOR_PARALLEL,
    )
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id, timeout=300, until=lambda j: j.checkpoint_step >= 10)
    workers = trainer_server.runner.running_group(job.id).worker_pids()
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    job = await wait_for_job(trainer, job.id, timeout=400)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.attempts == 2
    stream = trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
    logs = [e.log async for e in stream if e.HasField("log")]
    assert any(line.startswith("resumed from checkpoint at step") for line in logs)
    (version,) = (
        await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name="tp-resumed"))
    ).versions
    assert version.version == 1


async def test_two_nodes_meet_by_c10d_rendezvous_on_loopback_train_and_register(
    wide_trainer, registry
):
    trainer = wide_trainer
    dataset = (
        await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
    ).dataset
    spec = tiny_gpt2_job(
        dataset.id, "two-node-gpt", hyperparameters__max_steps=10, distributed__nodes=2
    )
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id, timeout=300)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    stream = trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
    logs = [e.log async for e in stream if e.HasField("log")]
    assert any("on 2 process(es)" in line for line in logs), logs[:5]
    (version,) = (
        await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name="two-node-gpt"))
    ).versions
    assert version.version == 1
