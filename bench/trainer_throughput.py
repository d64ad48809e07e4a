"""Training throughput: through the trainer service vs a bare torch loop.

Runs on this machine, in this order: a bare PyTorch loop (in a fresh process) (same
GPT-2 config, batch, optimiser, clipping, schedule and data as the worker, no
torchrun, no monitoring, no events), the same training as a 1-process job
through a real trainer service (torchrun, health monitoring, parameter stats
every 10 steps, event file, SQLite), a 2-process DDP job (gloo), and the bare
loop again. Figures are tokens/s over the training loop after 3 warm-up
steps, without evaluation/checkpoint time; process start-up is reported
separately as end-to-end wall time.

    .venv/bin/python bench/trainer_throughput.py [--steps 150]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from grpc import aio
from transformers import GPT2Config, GPT2LMHeadModel

from lattice.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer
from services.trainer.worker.data import DeterministicOrder, load_splits
from services.trainer.worker.schedule import lr_lambda

LAYERS, HEADS, HIDDEN, SEQ, BATCH, LR, SEED = 4, 4, 128, 128, 8, 1e-3, 5


def bare_loop(dataset_dir: Path, steps: int, vocab: int) -> float:
    """The same training, as plainly as PyTorch allows; tokens/s after 3 warm-up steps."""
    train, _validation, _meta = load_splits(dataset_dir, SEQ)
    torch.manual_seed(SEED)
    config = GPT2Config(
        vocab_size=vocab, n_positions=SEQ, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(trainer_pb2.LEARNING_RATE_SCHEDULE_COSINE, 10, steps)
    )
    order = DeterministicOrder(train.count, SEED, 0, 1, BATCH, 1)
    model.train()
    start = None
    for step in range(steps):
        if step == 3:
            start = time.perf_counter()
        _, (indices,) = order.micro_batches(step)
        inputs = train.take(indices)
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # the service reads the loss every step too
    return (steps - 3) * BATCH * SEQ / (time.perf_counter() - start)


async def run_job(trainer, registry, dataset_id: str, steps: int, nproc: int, name: str):
    spec = trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
        dataset_id=dataset_id,
        architecture=trainer_pb2.ModelArchitecture(
            num_layers=LAYERS, num_heads=HEADS, hidden_size=HIDDEN, max_positions=SEQ
        ),
        hyperparameters=trainer_pb2.Hyperparameters(
            learning_rate=LR,
            warmup_steps=10,
            batch_size=BATCH,
            sequence_length=SEQ,
            max_steps=steps,
            seed=SEED,
            gradient_clip_norm=1.0,
        ),
        distributed=trainer_pb2.DistributedConfig(processes_per_node=nproc),
        registration=trainer_pb2.RegistrationSpec(model_name=name),
    )
    job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    while job.state not in (
        trainer_pb2.JOB_STATE_SUCCEEDED,
        trainer_pb2.JOB_STATE_FAILED,
        trainer_pb2.JOB_STATE_CANCELLED,
    ):
        await asyncio.sleep(0.5)
        job = (await trainer.GetJob(trainer_pb2.GetJobRequest(job_id=job.id))).job
    if job.state != trainer_pb2.JOB_STATE_SUCCEEDED:
        raise SystemExit(f"job failed: {job.error}")
    version = (
        await registry.GetVersion(
            registry_pb2.GetVersionRequest(model_name=name, version=job.registered_version)
        )
    ).version
    wall = (job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()) / 1e9
    return version.metrics["tokens_per_second"], wall, version.metrics["val_loss"]


def bare_in_subprocess(dataset_dir: Path, steps: int, vocab: int) -> float:
    """The bare loop in a fresh process, like a worker (not next to the servers' threads)."""
    out = subprocess.run(
        [sys.executable, __file__, "--bare", str(dataset_dir), str(steps), str(vocab)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--bare", nargs=3, metavar=("DATASET_DIR", "STEPS", "VOCAB"))
    args = parser.parse_args()
    if args.bare:
        print(bare_loop(Path(args.bare[0]), int(args.bare[1]), int(args.bare[2])))
        return
    root = Path(tempfile.mkdtemp(prefix="trainer-bench-"))
    registry_server = await build_registry(
        RegistrySettings(port=0, data_dir=root, log_json=False, sqlite_synchronous="NORMAL")
    )
    await registry_server.start()
    trainer_server = await build_trainer(
        TrainerSettings(
            port=0, data_dir=root, log_json=False, registry_address=registry_server.address
        )
    )
    await trainer_server.start()
    async with (
        aio.insecure_channel(trainer_server.address) as t_channel,
        aio.insecure_channel(registry_server.address) as r_channel,
    ):
        trainer = trainer_pb2_grpc.TrainerServiceStub(t_channel)
        registry = registry_pb2_grpc.ModelRegistryServiceStub(r_channel)
        spec = trainer_pb2.DatasetSpec(
            name="bench",
            sources=[trainer_pb2.DataSource(builtin="python-docstrings")],
            cleaning=trainer_pb2.CleaningOptions(
                normalize_unicode=True, normalize_whitespace=True, deduplicate=True
            ),
            tokenizer=trainer_pb2.TokenizerOptions(vocab_size=4000),
        )
        started = time.perf_counter()
        dataset = (
            await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))
        ).dataset
        prepare_s = time.perf_counter() - started
        dataset_dir = root / "trainer" / "datasets" / dataset.id
        vocab = dataset.report.vocab_size
        steps = args.steps
        # Interleaved, two rounds: the machine is shared, so load drifts during a run.
        bares, ones = [], []
        for round_ in range(2):
            bares.append(await asyncio.to_thread(bare_in_subprocess, dataset_dir, steps, vocab))
            ones.append(await run_job(trainer, registry, dataset.id, steps, 1, f"bench-1-{round_}"))
        two, two_wall, _ = await run_job(trainer, registry, dataset.id, steps, 2, "bench-2")
    await trainer_server.stop(0)
    await registry_server.stop(0)
    bare = sum(bares) / len(bares)
    one = sum(r[0] for r in ones) / len(ones)
    one_wall, one_val = ones[-1][1], ones[-1][2]
    print(
        f"GPT-2 {LAYERS}x{HIDDEN}, {HEADS} heads, seq {SEQ}, batch {BATCH}/process, "
        f"{steps} steps, {dataset.report.train_tokens} training tokens"
    )
    print(f"dataset preparation (python-docstrings, BPE {vocab}): {prepare_s:.1f} s")
    print(
        f"bare torch loop            : {bare:9.0f} tokens/s  "
        f"(runs {', '.join(f'{b:.0f}' for b in bares)})"
    )
    print(
        f"service, 1 process         : {one:9.0f} tokens/s  = {one / bare:.2f}x bare  "
        f"(runs {', '.join(f'{r[0]:.0f}' for r in ones)}; job wall {one_wall:.1f} s incl. "
        f"torchrun start, export, registration; val loss {one_val:.3f}, "
        f"ppl {math.exp(one_val):.0f})"
    )
    print(
        f"service, 2-process DDP gloo: {two:9.0f} tokens/s  = {two / one:.2f}x 1 process "
        f"(global batch {2 * BATCH}; job wall {two_wall:.1f} s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
