"""Crash safety of the whole service: SIGKILL the trainer process mid-job,
start it again, the job resumes from its checkpoint and registers once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from grpc import aio

from lattice.v1 import registry_pb2, trainer_pb2, trainer_pb2_grpc
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.suite.ports import free_port
from services.trainer.registry_client import JOB_TAG
from tests.support.identity import ADMIN, signed_channel

from .conftest import docstring_spec, tiny_gpt2_job, wait_for_job

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def start_trainer(port: int, data_dir: Path, registry_address: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [
        sys.executable,
        "-m",
        "services.trainer",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--registry-address",
        registry_address,
        "--poll-interval-seconds",
        "0.1",
        "--key-ring-file",
        str(data_dir.parent / "registry-data" / DEFAULT_KEY_RING_PATH),
        "--log-json",
        "false",
    ]
    # Both starts append to one log beside the data (for a failure's post-mortem).
    with (data_dir.parent / "trainer-service.log").open("ab") as log:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


async def connect(port: int, data_dir: Path) -> aio.Channel:
    ring_dir = data_dir.parent / "registry-data"
    channel = signed_channel(f"127.0.0.1:{port}", ring_dir, "trainer", caller=ADMIN)
    await asyncio.wait_for(channel.channel_ready(), 60)
    return channel


async def test_service_sigkill_restart_resumes_job_and_registers_once(
    tmp_path, registry_server, registry
):
    port, data_dir = free_port(), tmp_path / "trainer-data"
    service = start_trainer(port, data_dir, registry_server.address)
    try:
        channel = await connect(port, data_dir)
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        dataset = (
            await stub.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=docstring_spec()))
        ).dataset
        spec = tiny_gpt2_job(dataset.id, "survivor", hyperparameters__max_steps=60)
        job = (await stub.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
        await wait_for_job(stub, job.id, timeout=120, until=lambda j: j.checkpoint_step >= 20)
        orphans = psutil.Process(service.pid).children(recursive=True)
        assert orphans  # torchrun and its worker
        service.send_signal(signal.SIGKILL)
        service.wait()
        await channel.close()
        assert any(p.is_running() for p in orphans)  # the group outlived the service

        service = start_trainer(port, data_dir, registry_server.address)
        channel = await connect(port, data_dir)
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        _, alive = psutil.wait_procs(orphans, timeout=30)
        assert not alive  # the restarted service killed the stale group
        final = await wait_for_job(stub, job.id, timeout=180)
        assert final.state == trainer_pb2.JOB_STATE_SUCCEEDED, final.error
        assert final.attempts == 2
        events = [e async for e in stub.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))]
        logs = [e.log for e in events if e.HasField("log")]
        assert any(line.startswith("trainer restarted") for line in logs)
        assert any(line.startswith("resumed from checkpoint at step") for line in logs)
        versions = await registry.ListVersions(
            registry_pb2.ListVersionsRequest(model_name="survivor")
        )
        assert [v.tags[JOB_TAG] for v in versions.versions] == [job.id]
        await channel.close()
    finally:
        service.kill()
        service.wait()
