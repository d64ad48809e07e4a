"""Triton path overhead: Lattice's Triton backend vs calling Triton directly.

Starts a real `tritonserver` (CPU, from nvidia-pytriton) on a repository that
`export_triton_repository` makes from a tiny GPT-2, then times, in one run and
interleaved request by request (so machine noise hits both sides alike):

* unary: `tritonclient.grpc.aio` `infer()` on the unary model (the baseline)
  vs `TritonBackend.generate()` (request building, span + trace-context headers,
  deadline, result parsing);
* streaming: `stream_infer()` over the decoupled model to the final response
  vs `TritonBackend.stream()` drained to its last chunk.

Prints p50/p99 per path, the ratio to the baseline and the added milliseconds
(goal: <= 0.5 ms added at p50).

    .venv/bin/python bench/inference_triton.py [--requests 300] [--tokens 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.grpc.aio as aioclient  # noqa: E402

from services.inference.backends import GenerationParams, LoadSpec, Task  # noqa: E402
from services.inference.triton_backend import TritonBackend  # noqa: E402
from services.inference.triton_export import export_triton_repository  # noqa: E402
from tests.support.tiny_models import build_tiny_causal_lm  # noqa: E402
from tests.support.triton_server import TritonProcess  # noqa: E402

PROMPT = "Once upon a time"


def direct_inputs(tokens: int) -> list[grpcclient.InferInput]:
    prompt = grpcclient.InferInput("PROMPT", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([PROMPT.encode()], dtype=np.object_))
    limit = grpcclient.InferInput("MAX_NEW_TOKENS", [1], "INT32")
    limit.set_data_from_numpy(np.array([tokens], dtype=np.int32))
    return [prompt, limit]


async def direct_stream(client, model: str, tokens: int) -> None:
    done = asyncio.Event()

    async def one():
        yield {"model_name": model, "inputs": direct_inputs(tokens)}
        await done.wait()

    responses = client.stream_infer(one())
    async for result, error in responses:
        assert error is None, error
        if result.as_numpy("FINISH_REASON")[0]:
            break
    done.set()


async def backend_stream(backend: TritonBackend, params: GenerationParams) -> None:
    async with contextlib.aclosing(backend.stream(PROMPT, params)) as chunks:
        async for chunk in chunks:
            if chunk.last:
                break


def summary(name: str, samples: list[float], baseline: list[float] | None) -> str:
    p50, p99 = np.percentile(samples, 50) * 1e3, np.percentile(samples, 99) * 1e3
    line = f"  {name:<34} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms"
    if baseline is not None:
        b50 = np.percentile(baseline, 50) * 1e3
        line += f"   ratio {p50 / b50:5.3f}x   added p50 {p50 - b50:+.3f} ms"
    return line


async def interleaved(n: int, first, second) -> tuple[list[float], list[float]]:
    a, b = [], []
    for i in range(n):
        order = (first, a), (second, b)
        for call, sink in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter()
            await call()
            sink.append(time.perf_counter() - start)
    return a, b


async def measure(server: TritonProcess, requests: int, tokens: int) -> None:
    params = GenerationParams(max_new_tokens=tokens)
    client = aioclient.InferenceServerClient(server.grpc_address)

    def backend_for(model: str) -> TritonBackend:
        uri = f"triton://{server.grpc_address}/{model}"
        return TritonBackend(LoadSpec(model, 1, Task.GENERATE, artifact_uri=uri))

    unary, streaming = backend_for("lm_unary"), backend_for("lm")
    await unary.load()
    await streaming.load()
    try:
        for _ in range(20):  # warm both paths (channels, model threads)
            await client.infer("lm_unary", direct_inputs(tokens))
            await unary.generate(PROMPT, params)
            await direct_stream(client, "lm", tokens)
            await backend_stream(streaming, params)

        direct, through = await interleaved(
            requests,
            lambda: client.infer("lm_unary", direct_inputs(tokens)),
            lambda: unary.generate(PROMPT, params),
        )
        print(f"unary generate, {tokens} new tokens, {requests} requests each (sequential):")
        print(summary("tritonclient infer (baseline)", direct, None))
        print(summary("TritonBackend.generate", through, direct))

        direct, through = await interleaved(
            requests,
            lambda: direct_stream(client, "lm", tokens),
            lambda: backend_stream(streaming, params),
        )
        print(f"streaming generate, {tokens} new tokens, to the final response:")
        print(summary("tritonclient stream_infer (baseline)", direct, None))
        print(summary("TritonBackend.stream", through, direct))
        spread = statistics.pstdev(direct) * 1e3
        print(f"  (baseline stdev {spread:.3f} ms; a shared machine adds noise to both sides)")
    finally:
        await unary.unload()
        await streaming.unload()
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        base = Path(tmp)
        artifact = build_tiny_causal_lm(base / "lm", seed=1)
        export_triton_repository(artifact, base / "repo", "lm")
        export_triton_repository(artifact, base / "repo", "lm_unary", decoupled=False)
        server = TritonProcess(base / "repo", base / "run")
        server.start(wait_models=["lm", "lm_unary"])
        print(f"tritonserver ready in {server.startup_seconds:.1f} s (2 models)")
        try:
            asyncio.run(measure(server, args.requests, args.tokens))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
