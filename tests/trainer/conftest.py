"""Trainer fixtures: a real registry and a real trainer server on port 0, real
torchrun process groups (gloo on CPU), tiny models."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lattice.v1 import registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime import LatticeServer
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer
from tests.support.identity import caller_channel


def trainer_settings(data_dir: Path, registry_address: str, **overrides) -> TrainerSettings:
    """A trainer beside the test's registry (`data_dir`'s sibling registry-data),
    reading the registry's key ring: one suite, one ring."""
    values = {
        "key_ring_file": str(data_dir.parent / "registry-data" / DEFAULT_KEY_RING_PATH),
        "port": 0,
        "data_dir": data_dir,
        "grace_seconds": 0.2,
        "log_json": False,
        "registry_address": registry_address,
        "poll_interval_seconds": 0.1,
        "cancel_grace_seconds": 3.0,
        "histogram_interval_steps": 20,
    }
    return TrainerSettings(**{**values, **overrides})


@pytest.fixture
async def registry_server(tmp_path) -> AsyncIterator[LatticeServer]:
    settings = RegistrySettings(
        port=0,
        data_dir=tmp_path / "registry-data",
        grace_seconds=0.2,
        log_json=False,
        sqlite_synchronous="NORMAL",
    )
    server = await build_registry(settings)
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
async def registry(registry_server) -> AsyncIterator[registry_pb2_grpc.ModelRegistryServiceStub]:
    async with caller_channel(registry_server) as channel:
        yield registry_pb2_grpc.ModelRegistryServiceStub(channel)


@pytest.fixture
async def trainer_server(tmp_path, registry_server) -> AsyncIterator[LatticeServer]:
    # Tests write their corpora under tmp_path: that is the source root.
    server = await build_trainer(
        trainer_settings(
            tmp_path / "trainer-data", registry_server.address, source_root=(str(tmp_path),)
        )
    )
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
async def faulty_trainer_server(tmp_path, registry_server) -> AsyncIterator[LatticeServer]:
    """A trainer whose workers run tests/trainer/faulty_worker.py (the test sets
    which fault with monkeypatch.setenv(faulty_worker.FAULT_ENV, ...))."""
    server = await build_trainer(
        trainer_settings(tmp_path / "trainer-data", registry_server.address),
        worker_module="tests.trainer.faulty_worker",
    )
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
async def faulty_trainer(
    faulty_trainer_server,
) -> AsyncIterator[trainer_pb2_grpc.TrainerServiceStub]:
    async with caller_channel(faulty_trainer_server) as channel:
        yield trainer_pb2_grpc.TrainerServiceStub(channel)


@pytest.fixture
async def trainer(trainer_server) -> AsyncIterator[trainer_pb2_grpc.TrainerServiceStub]:
    async with caller_channel(trainer_server) as channel:
        yield trainer_pb2_grpc.TrainerServiceStub(channel)


def docstring_spec(name: str = "docs", **tokenizer) -> trainer_pb2.DatasetSpec:
    return trainer_pb2.DatasetSpec(
        name=name,
        sources=[trainer_pb2.DataSource(builtin="python-docstrings")],
        cleaning=trainer_pb2.CleaningOptions(
            normalize_unicode=True,
            strip_markup=True,
            normalize_whitespace=True,
            min_chars=20,
            deduplicate=True,
        ),
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=tokenizer.get("kind", trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE),
            vocab_size=tokenizer.get("vocab_size", 2000),
        ),
        seed=1,
    )


def tiny_gpt2_job(dataset_id: str, model_name: str, **overrides) -> trainer_pb2.JobSpec:
    spec = trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
        dataset_id=dataset_id,
        architecture=trainer_pb2.ModelArchitecture(
            num_layers=2, num_heads=2, hidden_size=64, max_positions=64
        ),
        hyperparameters=trainer_pb2.Hyperparameters(
            learning_rate=3e-3,
            warmup_steps=5,
            batch_size=8,
            sequence_length=64,
            max_steps=40,
            seed=7,
            gradient_clip_norm=1.0,
        ),
        distributed=trainer_pb2.DistributedConfig(processes_per_node=1),
        checkpoint_interval_steps=10,
        eval_interval_steps=10,
        registration=trainer_pb2.RegistrationSpec(model_name=model_name),
    )
    for key, value in overrides.items():
        target = spec
        *path, last = key.split("__")
        for part in path:
            target = getattr(target, part)
        setattr(target, last, value)
    return spec


async def wait_for_job(
    stub: trainer_pb2_grpc.TrainerServiceStub,
    job_id: str,
    timeout: float = 120.0,
    until=None,
) -> trainer_pb2.Job:
    """Poll until the job is terminal (or `until(job)` holds)."""
    terminal = {
        trainer_pb2.JOB_STATE_SUCCEEDED,
        trainer_pb2.JOB_STATE_FAILED,
        trainer_pb2.JOB_STATE_CANCELLED,
        trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE,
    }
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await stub.GetJob(trainer_pb2.GetJobRequest(job_id=job_id))).job
        if until(job) if until else job.state in terminal:
            return job
        if job.state in terminal or asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job did not get there: {job}")
        await asyncio.sleep(0.2)
