"""Tensor, pipeline and hybrid parallel jobs on real torchrun process groups
(gloo, CPU): the same losses as one process with the same seed and data, and a
registered model that is plain GPT-2."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lattice.artifacts import unpack_to
from lattice.v1 import registry_pb2, trainer_pb2

from .conftest import docstring_spec, tiny_gpt2_job, wait_for_job

pytestmark = pytest.mark.slow

STEPS = 20


async def run_job(trainer, dataset_id: str, name: str, **distributed) -> list[float]:
    spec = tiny_gpt2_job(
        dataset_id,
        name,
        hyperparameters__max_steps=STEPS,
        hyperparameters__warmup_steps=2,
        architecture__dropout=0.0,  # dropout masks are per layout; the maths is not
        checkpoint_interval_steps=10,
        eval_interval_steps=0,
        **{f"distributed__{k}": v for k, v in distributed.items()},
    )
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id, timeout=400)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    stream = trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
    return [e.metrics.loss async for e in stream if e.HasField("metrics")]


async def load(registry, name: str, target) -> torch.nn.Module:
    (version,) = (
        await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name=name))
    ).versions
    stream = registry.DownloadArtifact(
        registry_pb2.DownloadArtifactRequest(digest=version.artifact_digest)
    )
    data = b"".join([m.chunk async for m in stream if m.WhichOneof("payload") == "chunk"])
    unpack_to(data, target)
    return AutoModelForCausalLM.from_pretrained(target).eval()


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
