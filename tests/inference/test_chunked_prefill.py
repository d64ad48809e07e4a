"""Chunked prefill in the scheduler (services.inference.scheduler), driven on
the transformers backend with a real tiny GPT-2: a long prompt is prefilled
a bounded chunk at a time, each chunk followed by a decode step of the
running streams, and answers exactly as when prefilled whole."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

from services.inference.backends import GenerationParams, LoadSpec, Task
from services.inference.scheduler import SchedulerObserver
from services.inference.transformers_backend import TransformersBackend
from services.suite.embedded import poll

CHUNK = 16
LONG_PROMPT = "once upon a time there was a lattice of small models " * 8


class _Steps(SchedulerObserver):
    """The kind and size of every forward pass, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.cancelled_after: list[int] = []

    def step(self, rows: int, seconds: float, prefill: bool) -> None:
        self.log.append(("prefill" if prefill else "decode", rows))

    def cancelled(self, steps: int) -> None:
        self.cancelled_after.append(steps)


async def _backend(model_dir, observer=None, **scheduling) -> TransformersBackend:
    backend = TransformersBackend(
        LoadSpec("lm", 1, Task.GENERATE, model_dir=model_dir),
        scheduling=scheduling,
        observer=observer,
        torch_threads=1,
    )
    await backend.load()
    return backend


@pytest.fixture
async def chunked(model_dirs):
    steps = _Steps()
    backend = await _backend(model_dirs["lm1"], steps, max_prefill_tokens=CHUNK)
    yield backend, steps
    await backend.unload()


async def test_a_long_prompt_alternates_bounded_chunks_with_decode_steps(chunked, model_dirs):
    backend, steps = chunked
    tokens = backend.count_tokens(LONG_PROMPT)
    assert tokens is not None and tokens > 5 * CHUNK
    running = backend.stream("Request 1: hello", GenerationParams(max_new_tokens=400))
    try:
        await anext(running)  # the running stream is decoding
        mark = len(steps.log)
        chunked_answer = await backend.generate(LONG_PROMPT, GenerationParams(max_new_tokens=4))
        window = steps.log[mark:]
    finally:
        await running.aclose()
    prefills = [i for i, (kind, _) in enumerate(window) if kind == "prefill"]
    assert len(prefills) == math.ceil(tokens / CHUNK)
    # Every chunk is followed by a decode step of the running stream: its next
    # token waits for one chunk at most, never for the whole prompt.
    assert all(window[i + 1][0] == "decode" for i in prefills)
    assert all(rows == 1 for kind, rows in window if kind == "prefill")

    whole = await _backend(model_dirs["lm1"], max_prefill_tokens=1024)
    try:
        assert await whole.generate(LONG_PROMPT, GenerationParams(max_new_tokens=4)) == (
            chunked_answer
        )
    finally:
        await whole.unload()


async def test_cancelling_a_request_during_its_chunked_prefill_frees_it(chunked):
    """It leaves before its next chunk, never reaching the batch."""
    backend, steps = chunked
    longest = LONG_PROMPT * 2  # about 10 chunks
    task = asyncio.create_task(backend.generate(longest, GenerationParams(max_new_tokens=4)))
    await poll(lambda: len(steps.log) >= 2, 30.0)  # mid-prefill
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await poll(lambda: backend.active_generations == 0, 30.0)
    assert len(steps.cancelled_after) == 1 and steps.cancelled_after[0] <= 2
    assert all(kind == "prefill" for kind, _ in steps.log)  # it never reached decoding
    assert backend.scheduler is not None and backend.scheduler.kv_tokens == 0
    # The scheduler carries on: the next long prompt is served.
    result = await backend.generate(longest, GenerationParams(max_new_tokens=2))
    assert result.prompt_tokens > 8 * CHUNK
