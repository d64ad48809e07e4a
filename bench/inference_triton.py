"""Triton path overhead: Lattice (backend, and the whole service) vs calling Triton directly.

Starts a real `tritonserver` (CPU, from nvidia-pytriton) on a repository that
`export_triton_repository` makes from a tiny GPT-2, then times, in one run, in
rounds of consecutive requests per path with a rotating order (so machine
noise hits every path alike, and each path is timed in its own steady state,
not right after whatever another path left behind):

* unary: `tritonclient.grpc.aio` `infer()` on the unary model (the baseline)
  vs `TritonBackend.generate()` (request building, span + trace-context headers,
  deadline, result parsing) vs `Generate` on the inference service (a real
  registry + inference server in this process, version `triton://...`,
  skip_cache) -- the service path adds a whole gRPC hop, so two floors are
  timed alongside: a plain `grpc.aio` server in this process whose Generate
  forwards to Triton with no Lattice code around it (the least any Python gRPC
  hop in front of Triton adds), and a bare `grpc.health.v1` Check on the
  inference server (a hop with no backend call);
* streaming: `stream_infer()` over the decoupled model to the final response
  vs `TritonBackend.stream()` drained to its last chunk vs `GenerateStream`.

Prints p50/p99 per path, the ratio to the baseline and the added milliseconds
(goal: <= 0.5 ms added at p50), and the service's p50 minus the plain
forwarder's: what Lattice itself adds over the floor.

    .venv/bin/python bench/inference_triton.py [--requests 300] [--tokens 4] [--round 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from inference_setup import as_run_service, signed_metadata

from services.inference.backends import GenerationParams, LoadSpec, Task
from services.inference.triton_backend import TritonBackend
from services.inference.triton_export import export_triton_repository
from services.suite.tiny_models import build_tiny_causal_lm
from services.suite.triton import TritonProcess

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


async def interleaved(n: int, *calls, run: int = 1) -> list[list[float]]:
    """Each call n times, in rounds of `run` consecutive calls per path with a
    rotating start, so drift hits all alike. Per-request alternation (run=1)
    would time each call right after a different path's, so that one path
    always inherits, say, an idle gap and another a warm connection."""
    samples: list[list[float]] = [[] for _ in calls]
    for i in range(max(1, n // run)):
        for j in range(len(calls)):
            k = (i + j) % len(calls)
            for _ in range(run):
                start = time.perf_counter()
                await calls[k]()
                samples[k].append(time.perf_counter() - start)
    return samples


async def start_service(root: Path, address: str):
    """Registry + inference in this process, serving the two Triton models."""
    from lattice.v1 import common_pb2, registry_pb2
    from services.inference.serving import VersionState
    from services.suite.embedded import Lab

    lab = await Lab(root).start()
    for name, model in (("remote", "lm"), ("remote-unary", "lm_unary")):
        await lab.create_model(name)
        await lab.reg.CreateVersion(
            registry_pb2.CreateVersionRequest(
                model_name=name,
                artifact_uri=f"triton://{address}/{model}",
                format=common_pb2.ARTIFACT_FORMAT_TRITON,
            )
        )
        await lab.deploy(name, {1: 100})
        await lab.wait_state(name, 1, VersionState.READY)
    return lab


async def start_plain_forwarder(triton_address: str, model: str):
    """The floor: a plain grpc.aio server in this process whose Generate sends
    the same KServe request to Triton and answers with its text -- no Lattice
    runtime, engine, spans, metrics or log. Returns (server, channel, address)."""
    from grpc import aio
    from tritonclient.grpc import service_pb2_grpc

    from lattice.v1 import inference_pb2, inference_pb2_grpc
    from services.inference import kserve

    channel = aio.insecure_channel(triton_address)
    triton = service_pb2_grpc.GRPCInferenceServiceStub(channel)

    class Forward(inference_pb2_grpc.InferenceServiceServicer):
        async def Generate(self, request, context):
            params = GenerationParams(max_new_tokens=request.parameters.max_new_tokens)
            reply = await triton.ModelInfer(
                kserve.generate_request(model, "", "", request.prompt, params)
            )
            return inference_pb2.GenerateResponse(text=kserve.Outputs(reply).text("TEXT"))

    server = aio.server()
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(Forward(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, channel, f"127.0.0.1:{port}"


async def measure(server: TritonProcess, requests: int, tokens: int, root: Path, run: int) -> None:
    from lattice.v1 import inference_pb2

    params = GenerationParams(max_new_tokens=tokens)
    client = aioclient.InferenceServerClient(server.grpc_address)

    def backend_for(model: str) -> TritonBackend:
        uri = f"triton://{server.grpc_address}/{model}"
        return TritonBackend(LoadSpec(model, 1, Task.GENERATE, artifact_uri=uri))

    unary, streaming = backend_for("lm_unary"), backend_for("lm")
    await unary.load()
    await streaming.load()
    lab = await start_service(root, server.grpc_address)
    wire = inference_pb2.GenerationParameters(max_new_tokens=tokens)
    unary_request = inference_pb2.GenerateRequest(
        model="remote-unary", prompt=PROMPT, parameters=wire, skip_cache=True
    )
    stream_request = inference_pb2.GenerateStreamRequest(
        model="remote", prompt=PROMPT, parameters=wire, skip_cache=True
    )

    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from lattice.v1 import inference_pb2_grpc

    channel = aio.insecure_channel(lab.inference.address)  # one channel for every service call
    # The service takes signed calls only; the plain forwarder is sent the same
    # metadata (and ignores it), so the two hops carry the same bytes.
    signed = signed_metadata(lab.root)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    forwarder, forwarder_upstream, forwarder_address = await start_plain_forwarder(
        server.grpc_address, "lm_unary"
    )
    forwarder_channel = aio.insecure_channel(forwarder_address)
    plain = inference_pb2_grpc.InferenceServiceStub(forwarder_channel)
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest()

    async def service_stream() -> None:
        async for _ in stub.GenerateStream(stream_request, metadata=signed):
            pass

    unary_paths = (
        lambda: client.infer("lm_unary", direct_inputs(tokens)),
        lambda: unary.generate(PROMPT, params),
        lambda: stub.Generate(unary_request, metadata=signed),
        lambda: plain.Generate(unary_request, metadata=signed),
        lambda: health.Check(check),
    )
    stream_paths = (
        lambda: direct_stream(client, "lm", tokens),
        lambda: backend_stream(streaming, params),
        service_stream,
    )
    try:
        await interleaved(20, *unary_paths, *stream_paths)  # warm channels and model threads
        direct, through, service, floor, hop = await interleaved(requests, *unary_paths, run=run)
        print(
            f"unary generate, {tokens} new tokens, {requests} requests per path "
            f"(sequential, rounds of {run}):"
        )
        print(summary("tritonclient infer (baseline)", direct, None))
        print(summary("TritonBackend.generate", through, direct))
        print(summary("service Generate (gRPC hop)", service, direct))
        print(summary("  floor: plain grpc.aio forwarder", floor, direct))
        print(summary("  for reference: bare health Check", hop, None))
        own = np.percentile(service, 50) - np.percentile(floor, 50)
        print(f"  service p50 - plain forwarder p50 = {own * 1e3:+.3f} ms (what Lattice adds)")

        direct, through, service = await interleaved(requests, *stream_paths, run=run)
        print(f"streaming generate, {tokens} new tokens, to the final response:")
        print(summary("tritonclient stream_infer (baseline)", direct, None))
        print(summary("TritonBackend.stream", through, direct))
        print(summary("service GenerateStream (gRPC hop)", service, direct))
        spread = statistics.pstdev(direct) * 1e3
        print(f"  (baseline stdev {spread:.3f} ms; a shared machine adds noise to every path)")
    finally:
        await channel.close()
        await forwarder_channel.close()
        await forwarder.stop(0)
        await forwarder_upstream.close()
        await lab.stop()
        await unary.unload()
        await streaming.unload()
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=4)
    parser.add_argument("--round", type=int, default=20, help="consecutive requests per path")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        base = Path(tmp)
        artifact = build_tiny_causal_lm(base / "lm", seed=1)
        export_triton_repository(artifact, base / "repo", "lm")
        export_triton_repository(artifact, base / "repo", "lm_unary", decoupled=False)
        server = TritonProcess(base / "repo", base / "run")
        server.start(wait_models=["lm", "lm_unary"])
        (base / "service").mkdir()
        setup = as_run_service(base / "inference.log")
        print(f"tritonserver ready in {server.startup_seconds:.1f} s (2 models); {setup}")
        try:
            asyncio.run(measure(server, args.requests, args.tokens, base / "service", args.round))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
