"""Micro-batching: gather requests for one model version, run them as one
batch, answer each caller individually.

A batch closes when it holds `max_batch_size` rows or `max_wait` has passed
since its first request arrived, whichever comes first; while one batch runs,
the next one fills up, so under load batches grow on their own and an idle
service adds at most `max_wait` of latency. A request cancelled while queued
is dropped before it costs compute. When a whole batch fails, each request is
retried alone, so one bad request fails alone and the rest succeed.

Cheap per request: a submit appends to a deque and wakes the worker only when
it is idle or the batch just became full; the window is one timer per batch,
not a wake-up (and a `wait_for` task) per request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry import trace

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

#: Runs one batch; returns one result or exception per item, in order.
RunBatch = Callable[[Sequence[Item]], Awaitable[Sequence[Result | BaseException]]]


@dataclasses.dataclass(slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    rows: int
    future: asyncio.Future[Result]
    enqueued: float
    span: trace.Span


class BatchObserver:
    """Hooks for metrics; the default does nothing."""

    def queued(self, seconds: float) -> None:
        """A request waited `seconds` between submit and its batch starting."""

    def batch(self, rows: int, requests: int) -> None:
        """A batch of `requests` requests and `rows` rows is about to run."""


class Batcher(Generic[Item, Result]):
    """Collects `submit`ted items into batches for `run_batch`."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_wait: float,
        rows: Callable[[Item], int] = lambda _item: 1,
        name: str = "batch",
        observer: BatchObserver | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self._rows = rows
        self._name = name
        self._observer = observer or BatchObserver()
        self._tracer = tracer or trace.get_tracer(__name__)
        self._queue: collections.deque[_Pending[Item, Result]] = collections.deque()
        self._queued = 0  # rows in the queue, cancelled ones included until taken
        self._wakeup = asyncio.Event()  # set: there is work (or the batch is full)
        self._filling = False  # the worker waits for the window; wake it only when full
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, item: Item) -> Result:
        """Queue `item` and wait for its own result (or exception)."""
        if self._closed:
            raise RuntimeError(f"{self._name} batcher is closed")
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"batcher:{self._name}")
        loop = asyncio.get_running_loop()
        pending: _Pending[Item, Result] = _Pending(
            item=item,
            rows=max(1, self._rows(item)),
            future=loop.create_future(),
            enqueued=time.perf_counter(),
            span=self._tracer.start_span(f"{self._name}.queue"),
        )
        self._queue.append(pending)
        self._queued += pending.rows
        if not self._filling or self._queued >= self.max_batch_size:
            self._wakeup.set()
        try:
            return await pending.future
        finally:
            pending.span.end()  # no-op if the batch already ended it

    async def close(self) -> None:
        """Stop the worker; queued requests fail with CancelledError."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for pending in self._queue:
            pending.future.cancel()
        self._queue.clear()
        self._queued = 0

    def _take_batch(self) -> list[_Pending[Item, Result]]:
        batch: list[_Pending[Item, Result]] = []
        rows = 0
        queue = self._queue
        while queue:
            head = queue[0]
            if head.future.done():  # cancelled while queued: costs nothing
                queue.popleft()
                self._queued -= head.rows
                continue
            if batch and rows + head.rows > self.max_batch_size:
                break
            batch.append(queue.popleft())
            self._queued -= head.rows
            rows += head.rows
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup
        while True:
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
            # Wait for more requests until the batch is full or the window ends.
            # Under load the queue filled while the previous batch ran: no wait.
            remaining = self.max_wait - (time.perf_counter() - self._queue[0].enqueued)
            if self._queued < self.max_batch_size and remaining > 0:
                wakeup.clear()
                self._filling = True
                timer = loop.call_later(remaining, wakeup.set)
                try:
                    await wakeup.wait()
                finally:
                    timer.cancel()
                    self._filling = False
            batch = self._take_batch()
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Pending[Item, Result]]) -> None:
        start = time.perf_counter()
        for pending in batch:
            self._observer.queued(start - pending.enqueued)
            pending.span.end()
        rows = sum(p.rows for p in batch)
        self._observer.batch(rows, len(batch))
        links = [trace.Link(p.span.get_span_context()) for p in batch]
        with self._tracer.start_as_current_span(
            f"{self._name}.run",
            links=links,
            attributes={"batch.requests": len(batch), "batch.rows": rows},
        ):
            results = await self._run_guarded([p.item for p in batch])
            if isinstance(results, BaseException) and len(batch) > 1:
                # The batch failed as a whole: retry each alone so only the
                # bad one fails.
                results = [await self._run_one(p.item) for p in batch]
        for pending, result in zip(batch, self._spread(results, len(batch)), strict=True):
            if pending.future.done():
                continue
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)

    async def _run_guarded(
        self, items: list[Item]
    ) -> Sequence[Result | BaseException] | BaseException:
        try:
            results = await self._run_batch(items)
        except Exception as exc:
            return exc
        if len(results) != len(items):
            return RuntimeError(f"{self._name}: batch returned {len(results)} for {len(items)}")
        return results

    async def _run_one(self, item: Item) -> Result | BaseException:
        results = await self._run_guarded([item])
        return results if isinstance(results, BaseException) else results[0]

    @staticmethod
    def _spread(
        results: Sequence[Result | BaseException] | BaseException, size: int
    ) -> Sequence[Result | BaseException]:
        return [results] * size if isinstance(results, BaseException) else results
