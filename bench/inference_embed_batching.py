"""Embed throughput at concurrency 32: micro-batching vs batch size 1.

Two inference services (same encoder artifact) differ only in
`max_batch_size`: 32 with a 5 ms window, and 1 (every request its own backend
call; the baseline). Client processes (bench/inference_load.py, 2 x 16 in
flight = 32) send one-text Embed requests with skip_cache for a fixed time;
the figure is texts per second. Everything else is the service's defaults,
set up as `run_service` does (bench/inference_setup.py).

    .venv/bin/python bench/inference_embed_batching.py [--seconds 5] [--layers 2 --hidden 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from inference_load import run_load
from inference_setup import as_run_service

from services.inference.server import InferenceSettings
from services.suite.embedded import Lab, deploy_encoder
from services.suite.tiny_models import build_tiny_encoder


def batch_stats(lab: Lab) -> float:
    labels = {"gen_ai_request_model": "enc"}
    batches = lab.metric("lattice_inference_batch_size_count", labels)
    rows = lab.metric("lattice_inference_batch_size_sum", labels)
    return rows / batches if batches else 1.0


async def main(args) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = as_run_service(root / "inference.log")
        encoder = build_tiny_encoder(
            root / "enc",
            seed=3,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=4,
            intermediate_size=args.hidden * 4,
        )
        for label, size in (("batch size 1", 1), ("micro-batching", 32)):
            lab = await Lab(
                root / label.replace(" ", "-"),
                max_batch_size=size,
                backend_threads=InferenceSettings.backend_threads,  # Lab's own default is 2
            ).start()
            try:
                await deploy_encoder(lab, {"enc": encoder})
                loop = asyncio.get_running_loop()
                count, cpu, wall = await loop.run_in_executor(
                    None,
                    lambda lab=lab: run_load(
                        lab.inference.address,
                        "embed",
                        data_dir=lab.root,
                        model="enc",
                        seconds=args.seconds,
                        processes=2,
                        concurrency=args.concurrency // 2,
                    ),
                )
                results[label] = (count / wall, count / cpu, batch_stats(lab))
            finally:
                await lab.stop()
    base, base_cpu = results["batch size 1"][:2]
    print(
        f"Embed, {args.concurrency} concurrent clients, one text per request, "
        f"BERT-style encoder {args.layers}x{args.hidden} on CPU"
    )
    print(
        f"  {setup}; max_batch_wait_ms {InferenceSettings.max_batch_wait_ms},"
        f" backend_threads {InferenceSettings.backend_threads}"
    )
    for label, (rate, per_core, mean_batch) in results.items():
        print(
            f"  {label:15s}: {rate:7.1f} texts/s {rate / base:5.2f}x   {per_core:7.1f} texts per"
            f" server CPU-second {per_core / base_cpu:5.2f}x   (mean batch {mean_batch:4.1f})"
        )
    print("  (clients share this machine's cores; per server CPU-second excludes them)")
    print("  goal: micro-batching >= 4x batch size 1")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
