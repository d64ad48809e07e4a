"""Training throughput: through the trainer service vs a bare torch loop.

Everything runs in one invocation, interleaved (the machine is shared, so load
drifts): per round a bare PyTorch loop in a fresh process, then the same
training as a 1-process job through a real trainer service with its
production defaults (torchrun, health monitoring, parameter stats every 10
steps, event file tailed into SQLite, the worker's "retain" host allocator);
then one bare loop with the C library's default allocator, and one 2-process
DDP job (gloo).

The bare loop is the same training as plainly as PyTorch allows: same GPT-2
config (special token ids included, sdpa attention), batch, sequence length,
AdamW (betas, weight decay 0 as the job's default, the default
for-each-parameter implementation), clipping, LR schedule, data order, fp32,
no autocast, no torch.compile, no DataLoader; it reads the loss every step
as the worker does. It runs under the environment torchrun gives one worker
(same thread counts, printed next to the worker's) and with the same
allocator policy as the worker, so the ratio is the service's own overhead.
The headline ratio is best service run over best bare run: other tenants
of the box only ever slow a run down, so the fastest of each is the closest
to its undisturbed figure; every run and the per-round ratios are printed too.
Figures are tokens/s over the training loop after 3 warm-up steps, without
evaluation/checkpoint time (none falls inside the window); process start-up
is reported separately as the job's end-to-end wall time.

    .venv/bin/python bench/trainer_throughput.py [--steps 150] [--rounds 2]
        [--allocator retain|system]   (the workers' and bare loop's policy; default
                                       is the service's default, retain)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lattice.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.suite.embedded import OPERATOR
from services.suite.signing import signed_channel
from services.trainer.data.at_rest import DatasetFiles
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer
from services.trainer.worker import allocator
from services.trainer.worker.data import DeterministicOrder, load_splits
from services.trainer.worker.schedule import lr_lambda

LAYERS, HEADS, HIDDEN, SEQ, BATCH, LR, SEED = 4, 4, 128, 128, 8, 1e-3, 5
WARMUP_STEPS = 10


def bare_loop(dataset_dir: Path, steps: int, policy: str) -> dict:
    """The same training, as plainly as PyTorch allows; tokens/s after 3 warm-up steps."""
    in_effect = allocator.apply(policy)
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    train, _validation, _meta = load_splits(DatasetFiles(dataset_dir, None), SEQ)
    tokenizer = AutoTokenizer.from_pretrained(dataset_dir / "tokenizer")
    eos = tokenizer.eos_token_id
    torch.manual_seed(SEED)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=SEQ,
        n_embd=HIDDEN,
        n_layer=LAYERS,
        n_head=HEADS,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(trainer_pb2.LEARNING_RATE_SCHEDULE_COSINE, WARMUP_STEPS, steps)
    )
    order = DeterministicOrder(train.count, SEED, 0, 1, BATCH, 1)
    model.train()
    start = 0.0
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
    return {
        "tokens_per_second": (steps - 3) * BATCH * SEQ / (time.perf_counter() - start),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "allocator": in_effect,
        "attention": model.config._attn_implementation,
    }


async def run_job(
    trainer, registry, jobs_dir: Path, dataset_id: str, steps: int, nproc: int, name: str
) -> dict:
    spec = trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
        dataset_id=dataset_id,
        architecture=trainer_pb2.ModelArchitecture(
            num_layers=LAYERS, num_heads=HEADS, hidden_size=HIDDEN, max_positions=SEQ
        ),
        hyperparameters=trainer_pb2.Hyperparameters(
            learning_rate=LR,
            warmup_steps=WARMUP_STEPS,
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
    return {
        "tokens_per_second": version.metrics["tokens_per_second"],
        "wall": wall,
        "val_loss": version.metrics["val_loss"],
        "worker": _started_event(jobs_dir / job.id / "events.jsonl"),
    }


def _started_event(path: Path) -> dict:
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record["type"] == "started":
            return record
    return {}


def bare_in_subprocess(dataset_dir: Path, steps: int, policy: str, env: dict) -> dict:
    """The bare loop in a fresh process with a worker's environment (not next to the
    servers' threads)."""
    out = subprocess.run(
        [sys.executable, __file__, "--bare", str(dataset_dir), str(steps), policy],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _settings(record: dict) -> str:
    return (
        f"threads {record.get('threads')}, interop {record.get('interop_threads')}, "
        f"allocator {record.get('allocator')}"
    )


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--allocator", choices=allocator.CHOICES, default=TrainerSettings.worker_allocator
    )
    parser.add_argument("--bare", nargs=3, metavar=("DATASET_DIR", "STEPS", "ALLOCATOR"))
    args = parser.parse_args()
    if args.steps < WARMUP_STEPS:
        parser.error(f"--steps must be at least {WARMUP_STEPS} (the jobs' warm-up)")
    if args.bare:
        print(json.dumps(bare_loop(Path(args.bare[0]), int(args.bare[1]), args.bare[2])))
        return
    root = Path(tempfile.mkdtemp(prefix="trainer-bench-"))
    try:
        await _bench(root, args.steps, args.rounds, args.allocator)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _bench(root: Path, steps: int, rounds: int, policy: str) -> None:
    registry_server = await build_registry(
        RegistrySettings(port=0, data_dir=root, log_json=False, sqlite_synchronous="NORMAL")
    )
    await registry_server.start()
    # Production defaults (stats every 10 steps, histograms every 100, allocator "retain").
    settings = TrainerSettings(
        port=0,
        data_dir=root,
        log_json=False,
        registry_address=registry_server.address,
        worker_allocator=policy,
    )
    trainer_server = await build_trainer(settings)
    await trainer_server.start()
    worker_env = trainer_server.runner.worker_environment()
    jobs_dir = root / "trainer" / "jobs"
    # Both servers read the key ring in `root`; the bench's calls are signed with it.
    async with (
        signed_channel(trainer_server.address, root, "trainer", caller=OPERATOR) as t_channel,
        signed_channel(registry_server.address, root, "registry", caller=OPERATOR) as r_channel,
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

        def bare(policy: str):
            return asyncio.to_thread(bare_in_subprocess, dataset_dir, steps, policy, worker_env)

        def job(nproc: int, name: str):
            return run_job(trainer, registry, jobs_dir, dataset.id, steps, nproc, name)

        # Interleaved rounds: the machine is shared, so load drifts during a run.
        bares, ones = [], []
        for round_ in range(rounds):
            bares.append(await bare(settings.worker_allocator))
            ones.append(await job(1, f"bench-1-{round_}"))
        plain = await bare(allocator.SYSTEM)
        two = await job(2, "bench-2")
    await trainer_server.stop(0)
    await registry_server.stop(0)
    ratios = [
        o["tokens_per_second"] / b["tokens_per_second"] for b, o in zip(bares, ones, strict=True)
    ]
    bare_tps = max(b["tokens_per_second"] for b in bares)
    one_tps = max(o["tokens_per_second"] for o in ones)
    last = ones[-1]
    print(
        f"GPT-2 {LAYERS}x{HIDDEN}, {HEADS} heads, seq {SEQ}, batch {BATCH}/process, "
        f"{steps} steps, {dataset.report.train_tokens} training tokens, fp32, "
        f"{bares[0]['attention']} attention"
    )
    print(
        f"dataset preparation (python-docstrings, BPE {dataset.report.vocab_size}): "
        f"{prepare_s:.1f} s"
    )
    print(f"bare loop settings : {_settings(bares[0])}")
    print(
        f"worker settings    : {_settings(last['worker'])} (1 process); "
        f"{_settings(two['worker'])} (2-process DDP)"
    )
    print(
        f"bare torch loop            : {bare_tps:9.0f} tokens/s best  "
        f"(runs {_runs([b['tokens_per_second'] for b in bares])})"
    )
    print(
        f"service, 1 process         : {one_tps:9.0f} tokens/s best "
        f"= {one_tps / bare_tps:.2f}x bare  "
        f"(runs {_runs([o['tokens_per_second'] for o in ones])}; per round "
        f"{', '.join(f'{r:.2f}x' for r in ratios)}; job wall {last['wall']:.1f} s incl. "
        f"torchrun start, export, registration; val loss {last['val_loss']:.3f}, "
        f"ppl {math.exp(last['val_loss']):.0f})"
    )
    print(
        f"bare loop, glibc default allocator: {plain['tokens_per_second']:9.0f} tokens/s "
        f"(service = {one_tps / plain['tokens_per_second']:.2f}x this)"
    )
    two_tps = two["tokens_per_second"]
    print(
        f"service, 2-process DDP gloo: {two_tps:9.0f} tokens/s  = "
        f"{two_tps / one_tps:.2f}x 1 process "
        f"(global batch {2 * BATCH}; job wall {two['wall']:.1f} s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
