"""Model parallelism on this box, and what the health checks cost.

Three figures, each a ratio against a baseline measured in the same run:

1. Tokens/s of a tiny GPT-2 under TENSOR_PARALLEL=2, PIPELINE_PARALLEL=2
   (GPipe and 1F1B) and HYBRID 2x2 against DDP on 2 processes, all through a real trainer service
   (torchrun, gloo, CPU). On CPU this is a capability check, not a speed-up:
   TP adds two all-reduces per block per direction, PP idles stages in the
   pipeline bubble, and none of them has more compute to spread over.
2. Parameter + gradient + AdamW state bytes per rank for a GPT-2 that does not
   fit a rank's budget (24 layers, hidden 1024, vocab 50k, ~350M parameters),
   counted from the same plans the worker runs (the model is built on the
   meta device; activations are excluded, they depend on batch and length).
3. The step time of a bare training loop with every health check on (the
   monitor's per-step checks plus per-layer weight/grad/update norms every 10
   steps, the service's default) against the same loop with them off,
   interleaved in one process. Goal: <= 5%.

    .venv/bin/python bench/training_parallel.py [--steps 30] [--overhead-steps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lattice.v1 import trainer_pb2, trainer_pb2_grpc
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime.identity import Caller
from services.suite import signing
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer
from services.trainer.worker.monitor import HealthMonitor, ParameterStats
from services.trainer.worker.parallel.gpt2_pp import stage_blocks

PP = trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL
STRATEGIES = [
    ("DDP x2", trainer_pb2.DISTRIBUTED_STRATEGY_DDP, 2, 0, 0),
    ("TP=2", trainer_pb2.DISTRIBUTED_STRATEGY_TENSOR_PARALLEL, 2, 0, 0),
    ("PP=2", PP, 2, 0, trainer_pb2.PIPELINE_SCHEDULE_GPIPE),
    ("PP=2 1F1B", PP, 2, 0, trainer_pb2.PIPELINE_SCHEDULE_1F1B),
    ("HYBRID 2x2", trainer_pb2.DISTRIBUTED_STRATEGY_HYBRID, 4, 2, 0),
]


async def throughput(root: Path, steps: int) -> dict[str, float]:
    registry_server = await build_registry(
        RegistrySettings(port=0, data_dir=root, log_json=False, sqlite_synchronous="NORMAL")
    )
    await registry_server.start()
    settings = TrainerSettings(
        port=0,
        data_dir=root,
        log_json=False,
        registry_address=registry_server.address,
        max_processes_per_node=4,
    )
    trainer_server = await build_trainer(settings)
    await trainer_server.start()
    figures: dict[str, float] = {}
    # Internal services take only signed calls: sign them as a suite service does.
    bench_caller = Caller("bench", "bench", frozenset({"admin"}))
    async with signing.signed_channel(
        trainer_server.address, root, "trainer", caller=bench_caller
    ) as channel:
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        spec = trainer_pb2.DatasetSpec(
            name="bench",
            sources=[trainer_pb2.DataSource(builtin="python-docstrings")],
            tokenizer=trainer_pb2.TokenizerOptions(vocab_size=2000),
        )
        dataset = (
            await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))
        ).dataset
        for label, strategy, processes, tp, schedule in STRATEGIES:
            job_spec = trainer_pb2.JobSpec(
                family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
                dataset_id=dataset.id,
                architecture=trainer_pb2.ModelArchitecture(
                    num_layers=4, num_heads=4, hidden_size=128, max_positions=64
                ),
                hyperparameters=trainer_pb2.Hyperparameters(
                    learning_rate=1e-3, batch_size=8, sequence_length=64, max_steps=steps, seed=3
                ),
                distributed=trainer_pb2.DistributedConfig(
                    processes_per_node=processes,
                    strategy=strategy,
                    tensor_parallel_size=tp,
                    pipeline_schedule=schedule,
                ),
                registration=trainer_pb2.RegistrationSpec(
                    model_name=f"bench-{label.lower().replace('=', '').replace(' ', '-')}"
                ),
            )
            job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=job_spec))).job
            while job.state not in (
                trainer_pb2.JOB_STATE_SUCCEEDED,
                trainer_pb2.JOB_STATE_FAILED,
                trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE,
            ):
                await asyncio.sleep(0.5)
                job = (await trainer.GetJob(trainer_pb2.GetJobRequest(job_id=job.id))).job
            stream = trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
            rates = [
                e.metrics.tokens_per_second
                async for e in stream
                if e.HasField("metrics") and e.metrics.step > 3
            ]
            # Per-step tokens/s is per data-parallel row x rows: the job's global rate.
            figures[label] = statistics.median(rates) if rates else math.nan
            print(f"  {label:11s} {figures[label]:9,.0f} tokens/s  ({job.state and 'done'})")
    await trainer_server.stop(0)
    await registry_server.stop(0)
    return figures


def bytes_per_rank() -> dict[str, float]:
    """Parameter + gradient + AdamW (2 moments) bytes per rank, fp32: 16 bytes a parameter."""
    config = GPT2Config(n_layer=24, n_embd=1024, n_head=16, vocab_size=50257, n_positions=1024)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    per = {n: p.numel() for n, p in model.named_parameters()}  # tied head counted once
    total = sum(per.values())
    block = [n for n in per if ".h." in n]
    split = [n for n in block if any(k in n for k in ("c_attn", "c_proj", "c_fc"))]
    tp2 = total - sum(per[n] for n in split) / 2
    first = stage_blocks(24, 2, 0)
    stage0 = sum(v for n, v in per.items() if ".h." not in n and "ln_f" not in n) + sum(
        v for n, v in per.items() if ".h." in n and int(n.split(".h.")[1].split(".")[0]) in first
    )
    stage1 = total - stage0 + per["transformer.wte.weight"]  # the head's own copy
    gib = 16 / 2**30
    return {
        "parameters (M)": total / 1e6,
        "DDP / 1 rank": total * gib,
        "TP=2": tp2 * gib,
        "PP=2 (largest stage)": max(stage0, stage1) * gib,
        "HYBRID 2x2": tp2 * gib,
    }


def monitoring_overhead(steps: int, rounds: int = 3) -> tuple[float, float]:
    """(seconds/step off, seconds/step on), best of interleaved rounds (one thread,
    as a torchrun worker on this box)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=2000, n_positions=64)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = torch.randint(0, 2000, (8, 64))
    policy = trainer_pb2.AlertPolicy(
        non_finite=2,
        gradient_explosion=1,
        explosion_factor=10,
        divergence=1,
        divergence_factor=4,
        overfitting=1,
        overfitting_patience=3,
    )

    def run(on: bool) -> float:
        monitor, stats = HealthMonitor(policy, 0), ParameterStats(model)
        started = time.perf_counter()
        for step in range(1, steps + 1):
            loss = model(input_ids=data, labels=data).loss
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            sampled = on and step % 10 == 0
            if sampled:
                stats.snapshot()
            optimizer.step()
            if sampled:
                stats.as_dicts(stats.squares(), None)
            if on:
                monitor.on_step(step, float(loss.detach()), norm)
            else:
                float(loss.detach())  # the loop reads the loss either way
            optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - started) / steps

    offs, ons = [], []
    for _ in range(rounds):
        offs.append(run(False))
        ons.append(run(True))
    return min(offs), min(ons)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--overhead-steps", type=int, default=100)
    parser.add_argument("--overhead-only", action="store_true", help="only figure 3")
    args = parser.parse_args()
    if args.overhead_only:
        off, on = monitoring_overhead(args.overhead_steps)
        print(f"3. health checks: overhead {100 * (on / off - 1):+.1f}% (goal <= 5%)")
        return
    print("1. tokens/s through the trainer service (gloo, CPU, tiny GPT-2):")
    root = Path(tempfile.mkdtemp(prefix="training-parallel-"))
    try:
        figures = asyncio.run(throughput(root, args.steps))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = figures["DDP x2"]
    for label, value in figures.items():
        print(f"  {label:11s} {value / base:5.2f}x DDP")
    print("2. parameter + gradient + AdamW bytes per rank, GPT-2 24x1024 (fp32):")
    for label, value in bytes_per_rank().items():
        print(f"  {label:22s} {value:8.2f}" + ("" if "(M)" in label else " GiB"))
    off, on = monitoring_overhead(args.overhead_steps)
    print(
        f"3. health checks: off {off * 1e3:.1f} ms/step, on {on * 1e3:.1f} ms/step, "
        f"overhead {100 * (on / off - 1):+.1f}% (goal <= 5%)"
    )


if __name__ == "__main__":
    main()
