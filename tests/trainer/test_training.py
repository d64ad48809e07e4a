"""Real training jobs: torchrun process groups on CPU (gloo), a real registry,
tiny GPT-2/BERT models built from a config."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lattice._artifacts import unpack_to
from lattice.v1 import registry_pb2, trainer_pb2
from services.trainer.registry_client import JOB_TAG

from .conftest import docstring_spec, tiny_gpt2_job, wait_for_job

pytestmark = pytest.mark.slow


async def prepare(trainer, **tokenizer) -> trainer_pb2.Dataset:
    request = trainer_pb2.PrepareDatasetRequest(spec=docstring_spec(**tokenizer))
    return (await trainer.PrepareDataset(request)).dataset


async def collect(trainer, job_id: str, from_sequence: int = 0) -> list:
    stream = trainer.WatchJob(
        trainer_pb2.WatchJobRequest(job_id=job_id, from_sequence=from_sequence)
    )
    return [event async for event in stream]


async def versions(registry, name: str) -> list[registry_pb2.ModelVersion]:
    response = await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name=name))
    return list(response.versions)


async def download(registry, version: registry_pb2.ModelVersion, target) -> None:
    stream = registry.DownloadArtifact(
        registry_pb2.DownloadArtifactRequest(digest=version.artifact_digest)
    )
    data = b"".join([m.chunk async for m in stream if m.WhichOneof("payload") == "chunk"])
    unpack_to(data, target)


async def test_ddp_job_trains_registers_with_lineage_and_loads(
    tmp_path, trainer, trainer_server, registry
):
    dataset = await prepare(trainer)
    spec = tiny_gpt2_job(dataset.id, "tiny-gpt", distributed__processes_per_node=2)
    spec.registration.alias = "candidate"
    spec.registration.canary_weight = 10
    submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    assert submitted.state == trainer_pb2.JOB_STATE_QUEUED
    watcher = asyncio.create_task(collect(trainer, submitted.id))
    job = await wait_for_job(trainer, submitted.id)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.attempts == 1 and job.checkpoint_step == 30
    assert (job.registered_model, job.registered_version) == ("tiny-gpt", 1)

    events = await asyncio.wait_for(watcher, 30)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    states = [e.job.state for e in events if e.HasField("job")]
    assert states == [
        trainer_pb2.JOB_STATE_QUEUED,
        trainer_pb2.JOB_STATE_RUNNING,
        trainer_pb2.JOB_STATE_REGISTERING,
        trainer_pb2.JOB_STATE_SUCCEEDED,
    ]
    metrics = [e.metrics for e in events if e.HasField("metrics")]
    assert [m.step for m in metrics] == list(range(1, 41))
    first, last = sum(m.loss for m in metrics[:5]) / 5, sum(m.loss for m in metrics[-5:]) / 5
    assert last < first - 0.5, (first, last)
    evaluated = [m for m in metrics if m.HasField("validation_loss")]
    assert [m.step for m in evaluated] == [10, 20, 30, 40]
    assert evaluated[-1].validation_perplexity > 1
    with_stats = [m for m in metrics if m.parameter_stats]
    assert [m.step for m in with_stats] == [10, 20, 30, 40]
    groups = {s.group for s in with_stats[0].parameter_stats}
    assert {"transformer.h.0", "transformer.h.1", "transformer.wte"} <= groups
    assert all(s.update_ratio > 0 and s.gradient_norm > 0 for s in with_stats[0].parameter_stats)
    assert all(m.tokens_per_second > 0 for m in metrics)
    rates = [m.learning_rate for m in metrics]
    assert rates[0] < rates[4] == pytest.approx(3e-3) and rates[-1] < rates[10]  # warm-up, cosine

    # Resumable: from a sequence, exactly the rest.
    tail = await collect(trainer, submitted.id, from_sequence=events[-5].sequence)
    assert [e.sequence for e in tail] == [e.sequence for e in events[-4:]]

    (version,) = await versions(registry, "tiny-gpt")
    assert version.lineage.training_job_id == job.id
    assert version.lineage.dataset_digest == dataset.digest
    assert version.tags[JOB_TAG] == job.id
    assert version.params["hp.learningRate"] == "0.003"
    assert version.params["dist.processesPerNode"] == "2"
    assert version.metrics["val_loss"] == pytest.approx(evaluated[-1].validation_loss)
    aliases = await registry.ListAliases(registry_pb2.ListAliasesRequest(model_name="tiny-gpt"))
    assert [(a.alias, a.version) for a in aliases.aliases] == [("candidate", 1)]
    deployment = await registry.GetDeployment(
        registry_pb2.GetDeploymentRequest(model_name="tiny-gpt")
    )
    assert [(r.version, r.weight) for r in deployment.deployment.routes] == [(1, 100)]

    # The artifact is a transformers directory: what inference loads.
    await download(registry, version, tmp_path / "artifact")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "artifact")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "artifact")
    ids = tokenizer("Return the", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    assert (tmp_path / "artifact" / "generation_config.json").is_file()


async def test_worker_sigkill_resumes_from_checkpoint_and_registers_once(
    trainer, trainer_server, registry
):
    dataset = await prepare(trainer)
    spec = tiny_gpt2_job(dataset.id, "resumed-gpt", distributed__processes_per_node=2)
    spec.hyperparameters.max_steps = 60
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id, until=lambda j: j.checkpoint_step >= 20)
    group = trainer_server.runner.running_group(job.id)
    workers = group.worker_pids()
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)
    job = await wait_for_job(trainer, job.id, timeout=180)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.attempts == 2
    events = await collect(trainer, job.id)
    logs = [e.log for e in events if e.HasField("log")]
    assert any(line.startswith("resumed from checkpoint at step") for line in logs)
    steps = [e.metrics.step for e in events if e.HasField("metrics")]
    assert steps[-1] == 60 and len(steps) > 60  # some steps ran twice, after the resume
    (version,) = await versions(registry, "resumed-gpt")
    assert version.tags[JOB_TAG] == job.id


async def test_nan_fault_raises_alert_and_stops(trainer, trainer_server, registry, monkeypatch):
    monkeypatch.setenv("LATTICE_TRAINER_TEST_FAULT", "nan_at_step=6")
    dataset = await prepare(trainer)
    spec = tiny_gpt2_job(dataset.id, "nan-gpt")
    spec.alerts.non_finite = trainer_pb2.ALERT_ACTION_STOP
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id)
    assert job.state == trainer_pb2.JOB_STATE_FAILED
    (alert,) = job.alerts
    assert alert.kind == trainer_pb2.ALERT_KIND_NON_FINITE and alert.step == 7
    assert alert.action == trainer_pb2.ALERT_ACTION_STOP
    assert "stopped by alert" in job.error and job.latest_metrics.step == 7
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # nothing was registered
        await versions(registry, "nan-gpt")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_fsdp_overfitting_alert_on_a_tiny_dataset(
    tmp_path, trainer, trainer_server, registry
):
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "t.txt").write_text(
        "\n\n".join(
            f"fact {i}: the number {i * 7919 % 1000} is special to unit {i}" for i in range(40)
        ),
        encoding="utf-8",
    )
    spec = trainer_pb2.DatasetSpec(
        name="tiny",
        sources=[trainer_pb2.DataSource(path=str(root))],
        tokenizer=trainer_pb2.TokenizerOptions(vocab_size=300),
        validation_fraction=0.25,
    )
    dataset = (await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))).dataset
    job_spec = tiny_gpt2_job(
        dataset.id,
        "overfit-gpt",
        hyperparameters__sequence_length=16,
        hyperparameters__batch_size=4,
        hyperparameters__max_steps=80,
        hyperparameters__learning_rate=1e-2,
        hyperparameters__warmup_steps=0,
        eval_interval_steps=5,
        checkpoint_interval_steps=0,
        distributed__strategy=trainer_pb2.DISTRIBUTED_STRATEGY_FSDP,
    )
    job_spec.hyperparameters.schedule = trainer_pb2.LEARNING_RATE_SCHEDULE_CONSTANT
    job_spec.alerts.overfitting = trainer_pb2.ALERT_ACTION_WARN
    job_spec.alerts.overfitting_patience = 2
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=job_spec))).job
    job = await wait_for_job(trainer, job.id)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    kinds = [a.kind for a in job.alerts]
    assert trainer_pb2.ALERT_KIND_OVERFITTING in kinds, job.alerts
    assert job.registered_version == 1


async def test_cancel_stops_the_process_group_and_queue_respects_concurrency(
    trainer, trainer_server
):
    dataset = await prepare(trainer)
    long_spec = tiny_gpt2_job(dataset.id, "cancel-gpt", hyperparameters__max_steps=100000)
    first = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=long_spec))).job
    second = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=long_spec))).job
    await wait_for_job(trainer, first.id, until=lambda j: j.latest_metrics.step > 0)
    queued = (await trainer.GetJob(trainer_pb2.GetJobRequest(job_id=second.id))).job
    assert queued.state == trainer_pb2.JOB_STATE_QUEUED  # max_concurrent_jobs = 1
    group = trainer_server.runner.running_group(first.id)
    members = [group.pgid, *group.worker_pids()]
    cancelled = (await trainer.CancelJob(trainer_pb2.CancelJobRequest(job_id=first.id))).job
    assert cancelled.state == trainer_pb2.JOB_STATE_CANCELLED
    for pid in members:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    await wait_for_job(trainer, second.id, until=lambda j: j.state == trainer_pb2.JOB_STATE_RUNNING)
    done = (await trainer.CancelJob(trainer_pb2.CancelJobRequest(job_id=second.id))).job
    assert done.state == trainer_pb2.JOB_STATE_CANCELLED
    again = (await trainer.CancelJob(trainer_pb2.CancelJobRequest(job_id=first.id))).job
    assert again == cancelled  # no-op once finished
    listed = await trainer.ListJobs(
        trainer_pb2.ListJobsRequest(states=[trainer_pb2.JOB_STATE_CANCELLED])
    )
    assert [j.id for j in listed.jobs] == [second.id, first.id]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.CancelJob(trainer_pb2.CancelJobRequest(job_id="job-unknown"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
