"""The micro-batcher, driven directly."""

from __future__ import annotations

import asyncio

import pytest

from services.inference.batcher import Batcher


class Recorder:
    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay = delay
        self.fail_on = fail_on

    async def __call__(self, items):
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot handle {self.fail_on}")
        return [item.upper() for item in items]


async def test_concurrent_requests_share_batches_and_get_their_own_answers():
    run = Recorder(delay=0.01)
    batcher = Batcher(run, max_batch_size=8, max_wait=0.02)
    words = [f"w{i}" for i in range(20)]
    results = await asyncio.gather(*(batcher.submit(w) for w in words))
    assert results == [w.upper() for w in words]
    assert all(len(b) <= 8 for b in run.batches)
    assert len(run.batches) <= 4  # 20 requests in batches of up to 8, not 20 calls
    await batcher.close()


async def test_rows_count_towards_the_batch_size():
    run = Recorder()
    batcher = Batcher(run, max_batch_size=4, max_wait=0.02, rows=len)
    await asyncio.gather(*(batcher.submit(w) for w in ["aa", "bb", "cc"]))
    assert [len(b) for b in run.batches] == [2, 1]
    await batcher.close()


async def test_a_lone_request_waits_at_most_max_wait():
    batcher = Batcher(Recorder(), max_batch_size=32, max_wait=0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await batcher.submit("x") == "X"
    assert loop.time() - start < 0.2
    await batcher.close()


async def test_one_failing_request_fails_alone():
    run = Recorder(fail_on="bad")
    batcher = Batcher(run, max_batch_size=8, max_wait=0.02)
    results = await asyncio.gather(
        *(batcher.submit(w) for w in ["a", "bad", "c"]), return_exceptions=True
    )
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError)
    await batcher.close()


async def test_a_request_cancelled_while_queued_costs_nothing():
    run = Recorder(delay=0.05)
    batcher = Batcher(run, max_batch_size=1, max_wait=0.0)
    first = asyncio.create_task(batcher.submit("first"))
    await asyncio.sleep(0.01)  # "first" is running
    second = asyncio.create_task(batcher.submit("second"))
    await asyncio.sleep(0)
    second.cancel()
    assert await first == "FIRST"
    with pytest.raises(asyncio.CancelledError):
        await second
    await asyncio.sleep(0.06)
    assert run.batches == [["first"]]
    await batcher.close()
