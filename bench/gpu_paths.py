"""The CUDA paths, on a machine with a GPU: what CI (CPU only) cannot check.

1. Inference: the continuous-batching scheduler on `cuda`, for a starter-size
   GPT-2 and a GPT-2-small-size one (12 layers, hidden 768; random weights,
   a byte-level BPE trained on the standard library's sources):
   - greedy parity: 16 prompts decoded together through `TransformersBackend`
     against `model.generate` run alone on the same device, text for text;
   - 32 concurrent streams vs the same 32 one at a time (tokens/s ratio);
   - mixed lengths (64 requests, 16..256 new tokens): continuous batching vs
     the old batcher's policy, as in bench/streaming.py.
2. Training through a real registry and trainer service with the NCCL
   backend on one GPU (DDP and FSDP, one process): the job succeeds, WatchJob
   reports GPU utilisation and memory, and tokens/s against the same job on
   gloo/CPU in the same run.

Exits non-zero when a check fails, so a run on a GPU host is a test too.

    python bench/gpu_paths.py [--skip-training]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from streaming import build_model
from transformers import GPT2LMHeadModel, PreTrainedTokenizerFast

from lattice.v1 import trainer_pb2, trainer_pb2_grpc
from services.inference.backends import GenerationParams, LoadSpec, Task
from services.inference.transformers_backend import TransformersBackend
from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime.identity import Caller
from services.suite.signing import signed_channel
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer

OPERATOR = Caller("bench", "gpu-bench", frozenset({"admin"}))
SIZES = {"starter": (2, 128, 4), "gpt2-small": (12, 768, 12)}


def generate_alone(model_dir: Path, prompts: list[str], new_tokens: int) -> list[str]:
    """The reference: `model.generate`, greedy, one prompt at a time on cuda."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    model = GPT2LMHeadModel.from_pretrained(model_dir).to("cuda").eval()
    texts = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tokenizer(prompt, return_tensors="pt").input_ids.to("cuda")
            out = model.generate(
                ids,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
            texts.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    del model
    torch.cuda.empty_cache()
    return texts


async def stream_tokens(backend: TransformersBackend, prompt: str, params) -> int:
    tokens = 0
    async for chunk in backend.stream(prompt, params):
        tokens = chunk.completion_tokens or tokens
    return tokens


async def mixed_lengths(backend: TransformersBackend) -> tuple[float, float]:
    """64 unary requests of 16..256 new tokens: tokens/s all at once under
    continuous batching, and under the old batcher's policy (groups of 32 that
    start together, every row computed until the group's longest finishes;
    a row's own tokens are all that count). bench/streaming.py's figure 3."""
    rng = random.Random(1)
    lengths = [rng.randint(16, 256) for _ in range(64)]
    mixed = [
        (f"class Mixed{i}:\n", GenerationParams(max_new_tokens=n)) for i, n in enumerate(lengths)
    ]

    async def run(group: list[tuple[str, GenerationParams]]) -> int:
        results = await asyncio.gather(*(backend.generate(p, q) for p, q in group))
        return sum(r.completion_tokens for r in results)

    start = time.perf_counter()
    padded_tokens = 0
    for i in range(0, len(mixed), 32):
        group = mixed[i : i + 32]
        longest = max(q.max_new_tokens for _, q in group)
        await run([(p, GenerationParams(max_new_tokens=longest)) for p, _ in group])
        padded_tokens += sum(q.max_new_tokens for _, q in group)
    padded = padded_tokens / (time.perf_counter() - start)
    start = time.perf_counter()
    continuous = await run(mixed) / (time.perf_counter() - start)
    return continuous, padded


async def inference(root: Path, size: str) -> dict:
    layers, hidden, heads = SIZES[size]
    model_dir = build_model(root / size, layers, hidden, heads)
    prompts = [f"def handler_{i}(request, context):\n    " for i in range(32)]
    new_tokens = 32
    reference = generate_alone(model_dir, prompts[:16], new_tokens)
    backend = TransformersBackend(
        LoadSpec("bench", 1, Task.GENERATE, model_dir=model_dir, device="cuda")
    )
    await backend.load()
    try:
        greedy = GenerationParams(max_new_tokens=new_tokens)
        together = await asyncio.gather(*(backend.generate(p, greedy) for p in prompts[:16]))
        same = sum(r.text == ref for r, ref in zip(together, reference, strict=True))
        params = GenerationParams(max_new_tokens=64)
        await stream_tokens(backend, prompts[0], params)  # warm-up
        start = time.perf_counter()
        alone = [await stream_tokens(backend, p, params) for p in prompts]
        sequential = sum(alone) / (time.perf_counter() - start)
        start = time.perf_counter()
        concurrent_tokens = await asyncio.gather(
            *(stream_tokens(backend, p, params) for p in prompts)
        )
        concurrent = sum(concurrent_tokens) / (time.perf_counter() - start)
        continuous, padded = await mixed_lengths(backend)
    finally:
        await backend.unload()
    return {
        "size": size,
        "greedy_parity": f"{same}/16",
        "sequential_tokens_per_s": round(sequential, 1),
        "concurrent_tokens_per_s": round(concurrent, 1),
        "concurrent_over_sequential": round(concurrent / sequential, 2),
        "mixed_continuous_over_padded_static": round(continuous / padded, 2),
    }


async def training(root: Path, steps: int) -> dict:
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
    figures: dict = {}
    channel = signed_channel(trainer_server.address, root, "trainer", caller=OPERATOR)
    try:
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        spec = trainer_pb2.DatasetSpec(
            name="bench",
            sources=[trainer_pb2.DataSource(builtin="python-docstrings")],
            tokenizer=trainer_pb2.TokenizerOptions(vocab_size=2000),
        )
        dataset = (
            await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))
        ).dataset
        gloo, nccl = trainer_pb2.DISTRIBUTED_BACKEND_GLOO, trainer_pb2.DISTRIBUTED_BACKEND_NCCL
        ddp, fsdp = trainer_pb2.DISTRIBUTED_STRATEGY_DDP, trainer_pb2.DISTRIBUTED_STRATEGY_FSDP
        runs = [
            ("gloo-cpu-ddp", gloo, ddp),
            ("nccl-gpu-ddp", nccl, ddp),
            ("nccl-gpu-fsdp", nccl, fsdp),
        ]
        for label, backend, strategy in runs:
            job_spec = trainer_pb2.JobSpec(
                family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
                dataset_id=dataset.id,
                architecture=trainer_pb2.ModelArchitecture(
                    num_layers=4, num_heads=4, hidden_size=256, max_positions=128
                ),
                hyperparameters=trainer_pb2.Hyperparameters(
                    learning_rate=1e-3, batch_size=16, sequence_length=128, max_steps=steps, seed=3
                ),
                distributed=trainer_pb2.DistributedConfig(
                    processes_per_node=1, strategy=strategy, backend=backend
                ),
                registration=trainer_pb2.RegistrationSpec(model_name=f"bench-{label}"),
            )
            job = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=job_spec))).job
            terminal = (
                trainer_pb2.JOB_STATE_SUCCEEDED,
                trainer_pb2.JOB_STATE_FAILED,
                trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE,
                trainer_pb2.JOB_STATE_CANCELLED,
            )
            while job.state not in terminal:
                await asyncio.sleep(0.5)
                job = (await trainer.GetJob(trainer_pb2.GetJobRequest(job_id=job.id))).job
            events = [
                e.metrics
                async for e in trainer.WatchJob(trainer_pb2.WatchJobRequest(job_id=job.id))
                if e.HasField("metrics")
            ]
            rates = [m.tokens_per_second for m in events if m.step > 3]
            gpu = [m for m in events if m.HasField("gpu_memory_bytes")]
            figures[label] = {
                "state": trainer_pb2.JobState.Name(job.state),
                "error": job.error,
                "tokens_per_s": round(statistics.median(rates), 1) if rates else None,
                "gpu_metric_events": len(gpu),
                "gpu_memory_mib": round(gpu[-1].gpu_memory_bytes / 2**20, 1) if gpu else None,
                "last_loss": round(events[-1].loss, 3) if events else None,
            }
            print(label, json.dumps(figures[label]), flush=True)
    finally:
        await channel.close()
        await trainer_server.stop(0)
        await registry_server.stop(0)
    base = figures["gloo-cpu-ddp"]["tokens_per_s"]
    for label in ("nccl-gpu-ddp", "nccl-gpu-fsdp"):
        rate = figures[label]["tokens_per_s"]
        figures[label]["over_gloo_cpu"] = round(rate / base, 2) if rate and base else None
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this bench checks the GPU paths and needs one")
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__, flush=True)
    root = Path(tempfile.mkdtemp(prefix="gpu-paths-"))
    failed = []
    try:
        for size in SIZES:
            figures = asyncio.run(inference(root, size))
            print("inference", json.dumps(figures), flush=True)
            if figures["greedy_parity"] != "16/16":
                failed.append(f"greedy parity {size}")
        if not args.skip_training:
            runs = asyncio.run(training(root / "train", args.steps))
            for label, run in runs.items():
                if run["state"] != "JOB_STATE_SUCCEEDED":
                    failed.append(f"training {label}")
                if label.startswith("nccl") and not run["gpu_metric_events"]:
                    failed.append(f"no GPU metrics {label}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if failed:
        sys.exit("FAILED: " + ", ".join(failed))
    print("all GPU checks passed")


if __name__ == "__main__":
    main()
