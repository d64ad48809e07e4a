"""The response cache is per tenant and sealed: a real Redis, the real service.

Tenant B never sees tenant A's entry (nor a `cached` flag for it); Redis
holds neither prompts nor answers; forged or corrupted values are never
served, are counted, and are recomputed; rotating the key ring under load
fails nothing, old entries still open and new ones name the new key id.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import redis.asyncio as redis

from services.inference.sealing import SEAL_MAGIC
from services.runtime.identity import Caller
from services.runtime.keys import DEFAULT_KEY_RING_PATH
from services.suite.embedded import deploy_lm, generate_request

ACME = Caller("acme", "alice").metadata()
GLOBEX = Caller("globex", "bob").metadata()
PROMPT = "Once upon a time there was a sealed cache"


def _kid(value: bytes) -> str:
    """The key id a sealed value names."""
    assert value.startswith(SEAL_MAGIC)
    size = value[len(SEAL_MAGIC)]
    return value[len(SEAL_MAGIC) + 1 : len(SEAL_MAGIC) + 1 + size].decode()


async def _values(redis_url: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter("lattice:inference:*")]
        return {key: await client.get(key) for key in keys}
    finally:
        await client.aclose()


def _rejected(lab) -> float:
    return lab.metric("lattice_inference_cache_lookups_total", {"result": "rejected"}) or 0.0


async def test_tenants_never_share_entries_or_the_cached_flag(cached_lab, model_dirs, redis_server):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    request = generate_request("lm", PROMPT, max_new_tokens=8)
    first = await lab.stub.Generate(request, metadata=ACME)
    again = await lab.stub.Generate(request, metadata=ACME)
    assert not first.cached and again.cached
    other = await lab.stub.Generate(request, metadata=GLOBEX)
    assert not other.cached  # B learns nothing about what A asked
    assert other.text == first.text
    assert (await lab.stub.Generate(request, metadata=GLOBEX)).cached
    assert len(await _values(redis_server.url)) == 2  # one entry per tenant


async def test_redis_holds_no_plaintext(cached_lab, model_dirs, redis_server):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    answers = []
    for i in range(4):
        request = generate_request("lm", f"{PROMPT} {i}", max_new_tokens=8)
        answers.append((await lab.stub.Generate(request, metadata=ACME)).text)
    values = await _values(redis_server.url)
    assert len(values) == 4
    for key, value in values.items():
        assert value.startswith(SEAL_MAGIC)
        for text in (PROMPT, "sealed cache", *(a for a in answers if len(a) >= 4)):
            assert text.encode() not in value and text.encode() not in key
        assert b"acme" not in key and b"acme" not in value


async def test_forged_and_corrupted_entries_are_recomputed(cached_lab, model_dirs, redis_server):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    requests = [generate_request("lm", f"{PROMPT} {i}", max_new_tokens=8) for i in range(3)]
    genuine = [await lab.stub.Generate(r, metadata=ACME) for r in requests]
    client = redis.Redis.from_url(redis_server.url)
    try:
        stored = await _values(redis_server.url)
        forged_text = b'{"text":"pwned","prompt_tokens":1,"completion_tokens":1}'
        replacements = [
            forged_text,  # plaintext JSON in the old format
            b"LS1\x02k1" + b"\0" * 12 + forged_text,  # looks sealed, is not
            None,  # a genuine entry with one bit flipped
        ]
        for (key, value), replacement in zip(sorted(stored.items()), replacements, strict=True):
            if replacement is None:
                replacement = value[:-1] + bytes((value[-1] ^ 1,))
            await client.set(key, replacement)
        # An entry copied onto another key (another tenant's or request's) fails too.
        keys = sorted(stored)
        await client.set(keys[0], stored[keys[1]])
    finally:
        await client.aclose()
    calls_before = lab.metric(
        "lattice_inference_backend_calls_total", {"gen_ai_operation_name": "text_completion"}
    )
    for request, original in zip(requests, genuine, strict=True):
        answer = await lab.stub.Generate(request, metadata=ACME)
        assert not answer.cached and answer.text == original.text
    assert _rejected(lab) == 3
    assert (
        lab.metric(
            "lattice_inference_backend_calls_total", {"gen_ai_operation_name": "text_completion"}
        )
        == calls_before + 3
    )
    # The recomputed answers replaced the forgeries.
    for request in requests:
        assert (await lab.stub.Generate(request, metadata=ACME)).cached


async def test_rotating_the_key_under_load_fails_nothing(cached_lab, model_dirs, redis_server):
    lab = cached_lab
    await deploy_lm(lab, model_dirs)
    old = generate_request("lm", f"{PROMPT} sealed before", max_new_tokens=4)
    assert not (await lab.stub.Generate(old, metadata=ACME)).cached
    (before,) = (await _values(redis_server.url)).values()
    assert _kid(before) == "k1"

    stop = asyncio.Event()
    failures: list[BaseException] = []
    served = 0

    async def load(worker: int) -> None:
        nonlocal served
        i = 0
        while not stop.is_set():
            request = generate_request("lm", f"{PROMPT} load {worker} {i % 5}", max_new_tokens=4)
            try:
                await lab.stub.Generate(request, metadata=ACME)
                served += 1
            except Exception as exc:  # every failure is a test failure, kept to report
                failures.append(exc)
            i += 1

    workers = [asyncio.create_task(load(w)) for w in range(4)]
    await asyncio.sleep(0.3)
    ring = str(lab.root / DEFAULT_KEY_RING_PATH)
    rotate = [sys.executable, "-m", "lattice.cli", "keys", "rotate", "--key-ring-file", ring]
    rotated = await asyncio.to_thread(
        subprocess.run, rotate, capture_output=True, text=True, check=False
    )
    assert rotated.returncode == 0, rotated.stderr
    await asyncio.sleep(1.5)  # services re-read the ring within a second
    fresh = generate_request("lm", f"{PROMPT} sealed after", max_new_tokens=4)
    assert not (await lab.stub.Generate(fresh, metadata=ACME)).cached
    stop.set()
    await asyncio.gather(*workers)
    assert not failures and served > 0
    assert (await lab.stub.Generate(old, metadata=ACME)).cached  # k1 entry still opens
    kids = {_kid(v) for v in (await _values(redis_server.url)).values()}
    assert kids == {"k1", "k2"}
    assert _rejected(lab) == 0
