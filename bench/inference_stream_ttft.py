"""Stream time-to-first-token through the service vs the backend's own.

Baseline: the transformers backend's `stream()` called in-process (no gRPC,
no routing, no cache): time until its first chunk with text. Measured: the
same prompt through GenerateStream on the real service (gRPC over loopback,
validation, routing, policy, cache lookup skipped with skip_cache): time
until the first message with text. Same loaded model object for both.

    .venv/bin/python bench/inference_stream_ttft.py [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from inference_setup import as_run_service

from lattice.v1 import inference_pb2
from services.inference.backends import GenerationParams
from services.suite.embedded import Lab, deploy_lm
from services.suite.tiny_models import build_tiny_causal_lm

PROMPTS = ["Once upon a time", "The stars were bright", "Hello lattice", "Green trees"]


async def backend_ttft(backend, prompt: str) -> float:
    start = time.perf_counter()
    stream = backend.stream(prompt, GenerationParams(max_new_tokens=16))
    try:
        async for chunk in stream:
            if chunk.delta:
                return time.perf_counter() - start
    finally:
        await stream.aclose()
    raise RuntimeError("no text")


async def service_ttft(lab: Lab, prompt: str) -> float:
    request = inference_pb2.GenerateStreamRequest(
        model="lm",
        prompt=prompt,
        parameters=inference_pb2.GenerationParameters(max_new_tokens=16),
        skip_cache=True,
    )
    start = time.perf_counter()
    call = lab.stub.GenerateStream(request)
    try:
        async for message in call:
            if message.delta:
                return time.perf_counter() - start
    finally:
        call.cancel()
    raise RuntimeError("no text")


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(as_run_service(root / "inference.log"))
        lab = await Lab(root / "lab").start()
        try:
            await deploy_lm(lab, {"lm1": build_tiny_causal_lm(root / "lm1", seed=1)})
            backend = lab.backend("lm", 1)
            direct, served = [], []
            for i in range(runs):  # interleaved, so machine noise hits both alike
                prompt = PROMPTS[i % len(PROMPTS)]
                direct.append(await backend_ttft(backend, prompt))
                served.append(await service_ttft(lab, prompt))
        finally:
            await lab.stop()
    d50, s50 = statistics.median(direct), statistics.median(served)
    print(f"stream time to first token, tiny GPT-2 on CPU, {runs} runs each")
    print(f"  backend stream() in-process (baseline): p50 {d50 * 1e3:6.2f} ms")
    print(f"  GenerateStream through the service    : p50 {s50 * 1e3:6.2f} ms")
    print(
        f"  the service adds {(s50 - d50) * 1e3:.2f} ms at p50 ({s50 / d50:.2f}x the backend's own)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
