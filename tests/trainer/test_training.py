"""Real training jobs: torchrun process groups on CPU (gloo), a real registry,
tiny GPT-2/BERT models built from a config."""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal

import grpc
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lattice.artifacts import unpack_to
from lattice.v1 import common_pb2, registry_pb2, trainer_pb2
from services.trainer.registry_client import JOB_TAG

from .conftest import docstring_spec, tiny_gpt2_job, wait_for_job
from .faulty_worker import FAULT_ENV

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
    second_watcher = asyncio.create_task(collect(trainer, submitted.id))
    job = await wait_for_job(trainer, submitted.id)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.attempts == 1 and job.checkpoint_step == 30
    assert (job.registered_model, job.registered_version) == ("tiny-gpt", 1)

    events = await asyncio.wait_for(watcher, 30)
    assert await asyncio.wait_for(second_watcher, 30) == events  # many watchers, same stream
    metrics_registry = trainer_server.metrics_registry
    assert metrics_registry.get_sample_value("lattice_trainer_jobs", {"state": "succeeded"}) == 1
    assert metrics_registry.get_sample_value("lattice_trainer_steps_total") == 40
    assert metrics_registry.get_sample_value("lattice_trainer_registrations_total") == 1
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
    histograms = [m.step for m in with_stats if m.parameter_stats[0].histogram_counts]
    assert histograms == [20, 40]  # the coarser interval
    counts = with_stats[1].parameter_stats[0]
    assert len(counts.histogram_edges) == len(counts.histogram_counts) + 1
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

    # Fine-tune the registered version: same tokenizer (same dataset), lineage to v1.
    tune = tiny_gpt2_job(dataset.id, "tiny-gpt", base_model="tiny-gpt@candidate")
    tune.hyperparameters.max_steps = 10
    tuned = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=tune))).job
    tuned = await wait_for_job(trainer, tuned.id)
    assert tuned.state == trainer_pb2.JOB_STATE_SUCCEEDED, tuned.error
    assert tuned.registered_version == 2
    second = (await versions(registry, "tiny-gpt"))[0]
    assert (second.version, second.lineage.base_version) == (2, 1)
    assert second.params["base_model"] == "tiny-gpt@candidate"
    # Fine-tuning starts from v1's weights: its first loss is v1's, not a fresh model's.
    assert tuned.latest_metrics.loss < first

    # A dataset can reuse a registered model's tokenizer (downloaded from the registry).
    reuse = docstring_spec("reuse")
    reuse.tokenizer.base_model = "tiny-gpt:1"
    reused = (await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=reuse))).dataset
    assert reused.report.vocab_size == dataset.report.vocab_size
    assert reused.report.train_tokens == dataset.report.train_tokens  # same tokenizer, same text

    # A job that cannot be set up (dataset vocabulary larger than the base model's)
    # fails at once with the reason, without pointless restarts.
    bigger = await prepare(trainer, vocab_size=4000)
    mismatch = tiny_gpt2_job(bigger.id, "tiny-gpt", base_model="tiny-gpt:1")
    failed = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=mismatch))).job
    failed = await wait_for_job(trainer, failed.id)
    assert failed.state == trainer_pb2.JOB_STATE_FAILED and failed.attempts == 1
    assert "exceeds the model's" in failed.error, failed.error


async def test_worker_sigkill_resumes_from_checkpoint_and_registers_once(
    trainer, trainer_server, registry
):
    dataset = await prepare(trainer)
    spec = tiny_gpt2_job(dataset.id, "reference-gpt", distributed__processes_per_node=2)
    spec.hyperparameters.max_steps = 50
    reference = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    spec.registration.model_name = "resumed-gpt"
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    reference = await wait_for_job(trainer, reference.id, timeout=180)
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
    # Every step reported, the last one last; steps after the checkpoint ran twice
    # unless the kill landed between a checkpoint and the next step's report.
    assert steps[-1] == 50 and set(steps) == set(range(1, 51))
    (version,) = await versions(registry, "resumed-gpt")
    assert version.tags[JOB_TAG] == job.id
    # Same data order, RNG and optimiser state: the resumed run ends where an
    # uninterrupted one does.
    (expected,) = await versions(registry, "reference-gpt")
    assert version.metrics["val_loss"] == pytest.approx(expected.metrics["val_loss"], rel=1e-4)
    assert job.latest_metrics.loss == pytest.approx(reference.latest_metrics.loss, rel=1e-4)


async def test_nan_in_the_data_raises_non_finite_alert_on_that_step_and_stops(
    faulty_trainer, faulty_trainer_server, registry, monkeypatch
):
    trainer, trainer_server = faulty_trainer, faulty_trainer_server
    monkeypatch.setenv(FAULT_ENV, "nan_inputs_at_step=7")
    dataset = await prepare(trainer)
    spec = tiny_gpt2_job(dataset.id, "nan-gpt")
    spec.alerts.non_finite = trainer_pb2.ALERT_ACTION_STOP
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id)
    assert job.state == trainer_pb2.JOB_STATE_FAILED
    counted = trainer_server.metrics_registry.get_sample_value(
        "lattice_trainer_alerts_total", {"kind": "non_finite", "action": "stop"}
    )
    assert counted == 1
    (alert,) = job.alerts
    assert alert.kind == trainer_pb2.ALERT_KIND_NON_FINITE and alert.step == 7
    assert alert.action == trainer_pb2.ALERT_ACTION_STOP
    assert "stopped by alert" in job.error and job.latest_metrics.step == 7
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # nothing was registered
        await versions(registry, "nan-gpt")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_nan_with_stop_keep_best_registers_the_best_evaluation(
    faulty_trainer, registry, monkeypatch
):
    trainer = faulty_trainer
    monkeypatch.setenv(FAULT_ENV, "nan_inputs_at_step=25")
    dataset = await prepare(trainer)
    spec = tiny_gpt2_job(dataset.id, "kept-gpt")
    spec.alerts.non_finite = trainer_pb2.ALERT_ACTION_STOP_KEEP_BEST
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    (alert,) = job.alerts
    assert (alert.step, alert.action) == (25, trainer_pb2.ALERT_ACTION_STOP_KEEP_BEST)
    (version,) = await versions(registry, "kept-gpt")
    assert version.tags["lattice.outcome"] == "alert_stop_keep_best"
    assert math.isfinite(version.metrics["val_loss"])
    assert version.metrics["steps"] == 25


async def test_fsdp_tiny_dataset_overfitting_alert_early_stop_keeps_best(
    tmp_path, trainer, trainer_server, registry
):
    root = tmp_path / "tiny"
    root.mkdir()
    words = [f"w{i}" for i in range(40)]
    rng = random.Random(0)  # random word sequences: memorising them cannot generalise
    (root / "t.txt").write_text(
        "\n\n".join(" ".join(rng.choices(words, k=12)) for _ in range(40)), encoding="utf-8"
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
        architecture__hidden_size=128,
        hyperparameters__sequence_length=16,
        hyperparameters__batch_size=4,
        hyperparameters__max_steps=400,
        hyperparameters__warmup_steps=0,
        eval_interval_steps=10,
        checkpoint_interval_steps=0,
        distributed__strategy=trainer_pb2.DISTRIBUTED_STRATEGY_FSDP,
    )
    job_spec.hyperparameters.schedule = trainer_pb2.LEARNING_RATE_SCHEDULE_CONSTANT
    job_spec.alerts.overfitting = trainer_pb2.ALERT_ACTION_WARN
    job_spec.alerts.overfitting_patience = 1
    job_spec.early_stopping_patience = 4
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=job_spec))).job
    job = await wait_for_job(trainer, job.id, timeout=400)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    overfitting = [a for a in job.alerts if a.kind == trainer_pb2.ALERT_KIND_OVERFITTING]
    assert overfitting and "validation loss rose" in overfitting[0].message, job.alerts
    # One alert per episode: never two overfitting alerts without a cleared one between.
    assert all(a.cleared for a in overfitting[1::2]), job.alerts
    assert job.latest_metrics.step < 400  # early stopping ended it
    (version,) = await versions(registry, "overfit-gpt")
    assert version.tags["lattice.outcome"] == "early_stopped"
    # The best evaluation's weights were registered (FSDP state restored), not the last.
    assert version.metrics["val_loss"] < job.latest_metrics.validation_loss


async def test_bert_masked_lm_job_with_two_process_fsdp_on_gloo(trainer, trainer_server, registry):
    dataset = await prepare(trainer, kind=trainer_pb2.TOKENIZER_KIND_WORDPIECE)
    spec = tiny_gpt2_job(
        dataset.id,
        "tiny-bert",
        family=trainer_pb2.MODEL_FAMILY_BERT_MASKED_LM,
        hyperparameters__max_steps=20,
        hyperparameters__gradient_accumulation_steps=2,
        distributed__processes_per_node=2,
        distributed__strategy=trainer_pb2.DISTRIBUTED_STRATEGY_FSDP,
    )
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    model = await registry.GetModel(registry_pb2.GetModelRequest(name="tiny-bert"))
    assert model.model.task == common_pb2.MODEL_TASK_EMBEDDING
    (version,) = await versions(registry, "tiny-bert")
    assert math.isfinite(version.metrics["val_loss"])
    assert version.params["dist.strategy"] == "DISTRIBUTED_STRATEGY_FSDP"
    assert job.checkpoint_step == 10  # sharded checkpoint written by both ranks


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
