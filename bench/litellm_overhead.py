"""Latency Lattice's gateway adds, against the latency LiteLLM's proxy adds.

The goal (issue 16): our gateway adds at most 1/4 of what LiteLLM adds, at p50
and p99. Both are measured in one run, in interleaved rounds, over one backend:

    direct:  client --gRPC--> inference                     (a cached answer)
    lattice: client --HTTP /v1/chat/completions--> gateway --gRPC--> inference
    litellm: client --HTTP--> LiteLLM proxy --HTTP--> gateway --> inference

- Lattice adds  = lattice - direct: the whole gateway (JWT, scopes, tenant policy,
  quotas, routing, the OpenAI translation, access log) and the HTTP/JSON hop.
- LiteLLM adds = litellm - lattice: its proxy placed in front of an
  OpenAI-compatible backend (here the gateway's own `/v1`), as it is deployed.

Servers: the child of `http_overhead.py` (a real registry, inference with a
tiny GPT-2 and a Redis response cache, and the gateway with its HTTP front on
uvicorn, in one process); every request asks for the same greedy completion,
so inference answers from its cache and the figures are the layers in front
of it. LiteLLM's proxy (`litellm --config`, one worker, no database, a
master key: it refuses to start without one) runs in its own process. The
client (httpx2, the openai SDK's transport) runs here.

LiteLLM lives in its own virtual environment (`.venv-litellm`, git-ignored;
created here with `python -m venv` + `pip install 'litellm[proxy]'` when
missing): `litellm[proxy]` pins an older huggingface_hub that breaks the
project's transformers, so it never goes into the project venv. It is started
with `LITELLM_LOCAL_MODEL_COST_MAP=True` and telemetry off, so it reaches
nothing beyond loopback.

    .venv/bin/python bench/litellm_overhead.py [--requests 200] [--rounds 3]
    make bench-litellm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from grpc import aio
from http_overhead import MODEL, SECRET, build_tiny_gpt2, deploy, free_port, redis_binary

from lattice.tokens import ALL_SCOPES, mint_dev_token
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.runtime.identity import Caller
from services.suite.signing import internal_token

BENCH = Path(__file__).resolve().parent
MESSAGES = [{"role": "user", "content": "Return the"}]
TENANT = "bench"


def ensure_litellm(venv: Path) -> Path:
    """The Python of `venv` with litellm[proxy] installed, creating it if needed."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import litellm.proxy.proxy_cli"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with litellm[proxy] (once; a few minutes)", flush=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "litellm[proxy]"], check=True)
    print(f"installed in {time.monotonic() - started:.0f} s", flush=True)
    return python


def litellm_config(path: Path, gateway_http: str) -> Path:
    """One model, `chat`, forwarded to the gateway's OpenAI endpoint with the
    token LiteLLM reads from its environment."""
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {gateway_http}/v1\n"
        "      api_key: os.environ/LATTICE_TOKEN\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  set_verbose: false\n"
    )
    return path


def wait_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with httpx2.Client() as client:
        while time.monotonic() < deadline:
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")


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


async def measure(
    endpoints: dict[str, str], keys: dict[str, str], internal: str, requests: int, rounds: int
) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    direct_request = inference_pb2.GenerateRequest(
        model=MODEL,
        messages=[inference_pb2.ChatMessage(**m) for m in MESSAGES],
        parameters=inference_pb2.GenerationParameters(max_new_tokens=16),
    )
    direct_metadata = (("authorization", f"Bearer {internal}"),)
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        aio.insecure_channel(endpoints["inference"]) as channel,
        httpx2.AsyncClient(limits=limits, timeout=60) as http,
    ):
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def direct() -> None:
            await stub.Generate(direct_request, metadata=direct_metadata, timeout=120)

        def chat_at(name: str):
            url = f"{endpoints[name]}/v1/chat/completions"
            headers = {"authorization": f"Bearer {keys[name]}"}

            async def call() -> None:
                reply = await http.post(url, json=body, headers=headers)
                reply.raise_for_status()

            return call

        paths = {"direct": direct, "lattice": chat_at("gateway"), "litellm": chat_at("litellm")}
        for call in paths.values():  # warm: connections, caches, lazy imports
            await timed(40, 4, call)
        print(f"{'path':<9}{'c':>4}{'p50 ms':>9}{'p99 ms':>9}{'adds p50':>10}{'adds p99':>10}")
        for concurrency in (1, 16):
            samples: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(rounds):
                for name, call in paths.items():
                    samples[name] += await timed(requests, concurrency, call)
            p50 = {name: percentile(v, 0.5) * 1e3 for name, v in samples.items()}
            p99 = {name: percentile(v, 0.99) * 1e3 for name, v in samples.items()}
            under = {"direct": None, "lattice": "direct", "litellm": "lattice"}
            for name in paths:
                base = under[name]
                add50 = f"{p50[name] - p50[base]:+10.2f}" if base else f"{'':>10}"
                add99 = f"{p99[name] - p99[base]:+10.2f}" if base else f"{'':>10}"
                print(f"{name:<9}{concurrency:>4}{p50[name]:>9.2f}{p99[name]:>9.2f}{add50}{add99}")
            for label, figures in (("p50", p50), ("p99", p99)):
                ours = figures["lattice"] - figures["direct"]
                theirs = figures["litellm"] - figures["lattice"]
                print(
                    f"  c={concurrency} {label}: Lattice adds {ours:.2f} ms, LiteLLM adds "
                    f"{theirs:.2f} ms; ratio {ours / theirs:.2f} (goal <= 0.25)"
                )


def run(args: argparse.Namespace) -> None:
    litellm = ensure_litellm(args.litellm_venv)
    root = Path(tempfile.mkdtemp(prefix="lattice-bench-"))
    model_dir = build_tiny_gpt2(root / "model")
    port_file = root / "ports.json"
    redis_port, litellm_port = free_port(), free_port()
    token = mint_dev_token(SECRET, tenant=TENANT, scopes=ALL_SCOPES)
    master_key = f"sk-{secrets.token_hex(32)}"
    processes = [
        subprocess.Popen(
            [redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [
                sys.executable,
                str(BENCH / "http_overhead.py"),
                "--serve",
                str(root / "data"),
                str(port_file),
                f"redis://127.0.0.1:{redis_port}/0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LATTICE_ACCESS_LOG": "true"},
        ),
    ]
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if processes[1].poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the servers did not start")
            time.sleep(0.1)
        ports = json.loads(port_file.read_text())
        deploy(ports["grpc"], token, model_dir)
        config = litellm_config(root / "litellm.yaml", ports["http"])
        processes.append(
            subprocess.Popen(
                [
                    str(litellm),
                    "-m",
                    "litellm.proxy.proxy_cli",
                    "--config",
                    str(config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(litellm_port),
                    "--num_workers",
                    "1",
                    "--telemetry",
                    "False",
                ],
                cwd=root,
                env={
                    "PATH": os.environ.get("PATH", ""),
                    "HOME": str(root),
                    "LATTICE_TOKEN": token,
                    # Its own API key (it refuses to start without one): checked per
                    # request, as the gateway checks its JWT.
                    "LITELLM_MASTER_KEY": master_key,
                    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                    "LITELLM_LOG": "ERROR",
                },
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        litellm_url = f"http://127.0.0.1:{litellm_port}"
        started = time.monotonic()
        wait_http(f"{litellm_url}/health/liveliness", 300)
        print(f"LiteLLM proxy up in {time.monotonic() - started:.0f} s; cached chat completion\n")
        caller = Caller(TENANT, "bench-client", frozenset({"admin"}))
        internal = internal_token(root / "data", "inference", caller)
        endpoints = {
            "inference": ports["inference"],
            "gateway": ports["http"],
            "litellm": litellm_url,
        }
        keys = {"gateway": token, "litellm": master_key}
        asyncio.run(measure(endpoints, keys, internal, args.requests, args.rounds))
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="per path, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--litellm-venv", type=Path, default=BENCH.parent / ".venv-litellm")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
