"""Unary Generate throughput at concurrency 32: micro-batched decoding vs each
request decoding alone.

Two inference services (same tiny GPT-2 artifact) differ only in
`batch_generate`. Client processes (bench/inference_load.py, 2 x 16 in
flight) send distinct 32-token greedy prompts with skip_cache; the figure
is completed requests (and tokens) per second. Baseline: batch_generate off
(every request runs its own decode loop in the backend's thread pool).

    .venv/bin/python bench/inference_generate_batching.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from inference_load import run_load
from inference_setup import as_run_service

from services.inference.server import InferenceSettings
from services.suite.embedded import Lab, deploy_lm
from services.suite.tiny_models import build_tiny_causal_lm


async def main(args) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(as_run_service(root / "inference.log"))
        lm = build_tiny_causal_lm(root / "lm1", seed=1)
        for label, batched in (("decode alone", False), ("micro-batched", True)):
            lab = await Lab(
                root / label.replace(" ", "-"),
                batch_generate=batched,
                backend_threads=InferenceSettings.backend_threads,  # Lab's own default is 2
            ).start()
            try:
                await deploy_lm(lab, {"lm1": lm})
                loop = asyncio.get_running_loop()
                count, _cpu, wall = await loop.run_in_executor(
                    None,
                    lambda lab=lab: run_load(
                        lab.inference.address,
                        "generate-uncached",
                        seconds=args.seconds,
                        processes=2,
                        concurrency=args.concurrency // 2,
                    ),
                )
                labels = {"gen_ai_request_model": "lm"}
                batches = lab.metric("lattice_inference_batch_size_count", labels)
                rows = lab.metric("lattice_inference_batch_size_sum", labels)
                results[label] = (count / wall, rows / batches if batches else 1.0)
            finally:
                await lab.stop()
    base = results["decode alone"][0]
    print(
        f"unary Generate, {args.concurrency} concurrent clients, distinct 32-token greedy"
        " prompts, tiny GPT-2 on CPU"
    )
    for label, (rate, mean_batch) in results.items():
        print(
            f"  {label:14s}: {rate:7.1f} req/s (<= {rate * 32:5.0f} tokens/s)  mean batch"
            f" {mean_batch:4.1f}  {rate / base:5.2f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    asyncio.run(main(parser.parse_args()))
