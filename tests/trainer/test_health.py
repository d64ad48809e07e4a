"""Training health on real jobs: explosion caught early, no alert floods, the
quality gate keeps a broken model out of the registry, automatic actions."""

from __future__ import annotations

import math

import grpc
import pytest

from lattice.cli import job_plot, job_series
from lattice.v1 import registry_pb2, trainer_pb2

from .conftest import docstring_spec, tiny_gpt2_job, wait_for_job
from .faulty_worker import FAULT_ENV

pytestmark = pytest.mark.slow

WARN = trainer_pb2.ALERT_ACTION_WARN


async def prepare(trainer) -> trainer_pb2.Dataset:
    request = trainer_pb2.PrepareDatasetRequest(spec=docstring_spec())
    return (await trainer.PrepareDataset(request)).dataset


async def test_lr_one_explodes_is_caught_early_and_the_quality_gate_refuses_it(
    tmp_path, trainer, registry
):
    dataset = await prepare(trainer)
    spec = tiny_gpt2_job(
        dataset.id,
        "exploded-gpt",
        hyperparameters__learning_rate=1.0,
        hyperparameters__warmup_steps=0,
        hyperparameters__max_steps=30,
        checkpoint_interval_steps=0,
    )
    for name in ("non_finite", "gradient_explosion", "divergence"):
        setattr(spec.alerts, name, WARN)  # let it run to the end: the gate must catch it
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id, timeout=180)
    assert job.state == trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE, job
    first = [a for a in job.alerts if not a.cleared]
    assert first and first[0].step <= 3, job.alerts  # within the first few steps
    assert {a.kind for a in first} & {
        trainer_pb2.ALERT_KIND_GRADIENT_EXPLOSION,
        trainer_pb2.ALERT_KIND_DIVERGENCE,
    }
    assert len(job.alerts) <= 8  # episodes, not one alert per step
    assert "quality gate" in job.error and "uniform guess" in job.error, job.error
    assert job.latest_metrics.step == 30  # metrics kept
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # nothing registered
        await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name="exploded-gpt"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    # The plot of the run marks where the alerts fired.
    stream = trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
    series = job_series.collect([event async for event in stream])
    assert [alert[0] for alert in series.alerts][:1] == [first[0].step]
    path = job_plot.plot(series, tmp_path / "exploded.png", f"job {job.id} (lr = 1.0)")
    assert path.read_bytes()[:4] == b"\x89PNG"


async def test_a_strict_gate_refuses_a_healthy_job(trainer, registry):
    dataset = await prepare(trainer)
    strict = tiny_gpt2_job(
        dataset.id, "strict-gpt", hyperparameters__max_steps=10, max_validation_loss=0.5
    )
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=strict))).job
    job = await wait_for_job(trainer, job.id, timeout=180)
    assert job.state == trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE
    assert "max_validation_loss" in job.error and math.isfinite(job.latest_metrics.loss)


async def test_rollback_reloads_the_last_checkpoint_with_a_lower_rate_and_registers(
    faulty_trainer, registry, monkeypatch
):
    trainer = faulty_trainer
    monkeypatch.setenv(FAULT_ENV, "nan_inputs_at_step=15")
    dataset = await prepare(trainer)
    spec = tiny_gpt2_job(dataset.id, "rolled-gpt", hyperparameters__max_steps=30)
    spec.alerts.non_finite = trainer_pb2.ALERT_ACTION_ROLLBACK
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, job.id, timeout=180)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    alerts = [a for a in job.alerts if not a.cleared]
    assert [(a.kind, a.step, a.action) for a in alerts] == [
        (trainer_pb2.ALERT_KIND_NON_FINITE, 15, trainer_pb2.ALERT_ACTION_ROLLBACK)
    ]
    stream = trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
    events = [event async for event in stream]
    logs = [e.log for e in events if e.HasField("log")]
    assert "rolled back to the checkpoint at step 10" in logs
    rates = {}
    for event in events:
        if event.HasField("metrics"):
            rates.setdefault(event.metrics.step, []).append(event.metrics.learning_rate)
    assert len(rates[12]) == 2  # steps 11..15 ran twice
    assert rates[12][1] == pytest.approx(rates[12][0] * 0.5)  # at half the rate
    (version,) = (
        await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name="rolled-gpt"))
    ).versions
    assert math.isfinite(version.metrics["val_loss"])
