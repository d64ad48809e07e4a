"""How soon a training job's ranks start: forked from the forkserver vs exec'd.

One trainer service runs the same short GPT-2 job (1 and 2 processes) again
and again, alternating between its two ways of starting an attempt:

- forked (the default): the attempt's agent is forked from the forkserver,
  which imported torch, transformers and the training program once, and the
  agent forks its ranks;
- exec'd: what happens when the trainer's Python is another interpreter
  path (here the same venv's `python3.11`), the path every attempt took before:
  a fresh agent that imports torch, then fresh ranks that import everything.

Figures per job: time to start (submit → the worker's "started" event, which
it writes once the model is built and the process group is up) and the whole
job's wall time, medians over the rounds; the headline is forked over exec'd
in the same run.

    .venv/bin/python bench/job_start.py [--rounds 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lattice.v1 import trainer_pb2, trainer_pb2_grpc
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.suite.embedded import OPERATOR
from services.suite.signing import signed_channel
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer

FINISHED = (
    trainer_pb2.JOB_STATE_SUCCEEDED,
    trainer_pb2.JOB_STATE_FAILED,
    trainer_pb2.JOB_STATE_CANCELLED,
)


async def run_job(trainer, jobs_dir: Path, dataset_id: str, steps: int, nproc: int) -> dict:
    spec = trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
        dataset_id=dataset_id,
        architecture=trainer_pb2.ModelArchitecture(
            num_layers=2, num_heads=2, hidden_size=64, max_positions=64
        ),
        hyperparameters=trainer_pb2.Hyperparameters(
            learning_rate=1e-3, batch_size=4, sequence_length=64, max_steps=steps, seed=1
        ),
        distributed=trainer_pb2.DistributedConfig(processes_per_node=nproc),
        registration=trainer_pb2.RegistrationSpec(model_name=f"start-{nproc}"),
    )
    submitted = time.time()
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    while job.state not in FINISHED:
        await asyncio.sleep(0.05)
        job = (await trainer.GetJob(trainer_pb2.GetJobRequest(job_id=job.id))).job
    if job.state != trainer_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"job failed: {job.error}")
    events = (jobs_dir / job.id / "events.jsonl").read_text().splitlines()
    started = next(r for r in map(json.loads, events) if r["type"] == "started")
    return {"start": started["time"] - submitted, "wall": time.time() - submitted}


def second_name() -> str:
    """This interpreter under another path in the same venv (`python3.11`)."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    other = Path(sys.executable).with_name(version)
    if str(other) == sys.executable or not other.exists():
        raise SystemExit(f"needs the interpreter under a second name beside {sys.executable}")
    return str(other)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(bench(args.rounds, args.steps, second_name()))


async def bench(rounds: int, steps: int, other_path: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="job-start-bench-"))
    registry_server = await build_registry(RegistrySettings(port=0, data_dir=root, log_json=False))
    await registry_server.start()
    trainer_server = await build_trainer(
        TrainerSettings(
            port=0, data_dir=root, log_json=False, registry_address=registry_server.address
        )
    )
    await trainer_server.start()
    launcher = trainer_server.runner.launcher
    try:
        async with signed_channel(
            trainer_server.address, root, "trainer", caller=OPERATOR
        ) as channel:
            trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
            dataset = (
                await trainer.PrepareDataset(
                    trainer_pb2.PrepareDatasetRequest(
                        spec=trainer_pb2.DatasetSpec(
                            name="bench",
                            sources=[trainer_pb2.DataSource(builtin="python-docstrings")],
                            tokenizer=trainer_pb2.TokenizerOptions(vocab_size=2000),
                        )
                    )
                )
            ).dataset
            jobs_dir = root / "trainer" / "jobs"
            ways = {"forked": sys.executable, "exec'd": other_path}
            runs: dict[tuple[str, int], list[dict]] = {}
            # The first attempt starts the forkserver: warm it up, unmeasured.
            launcher.python = sys.executable  # type: ignore[attr-defined]
            await run_job(trainer, jobs_dir, dataset.id, steps, 1)
            for _ in range(rounds):  # interleaved: the machine's load drifts
                for nproc in (1, 2):
                    for way, python in ways.items():
                        launcher.python = python  # type: ignore[attr-defined]
                        runs.setdefault((way, nproc), []).append(
                            await run_job(trainer, jobs_dir, dataset.id, steps, nproc)
                        )
    finally:
        await trainer_server.stop(0)
        await registry_server.stop(0)
        shutil.rmtree(root, ignore_errors=True)

    def median(way: str, nproc: int, key: str) -> float:
        return statistics.median(r[key] for r in runs[(way, nproc)])

    print(f"GPT-2 2x64, {steps} steps, {rounds} rounds (medians; seconds from submit)")
    for nproc in (1, 2):
        for key, what in (("start", "ranks started"), ("wall", "job done")):
            forked, execd = median("forked", nproc, key), median("exec'd", nproc, key)
            print(
                f"  {nproc} process(es), {what}: forked {forked:.2f} s, exec'd {execd:.2f} s"
                f" -> {forked / execd:.2f}x"
            )


if __name__ == "__main__":
    main()
