"""Auto-pipelining of Redis GETs: while one lookup is on its way to Redis,
the lookups that arrive meanwhile queue up and go next as one MGET.

Under load, each GET through redis-py costs tens of microseconds of client
CPU plus a syscall pair on Redis; an MGET of 32 keys a few microseconds per
key. So at most one command per replica is in flight: a lookup that finds
none in flight sends its own GET at once (an idle service adds nothing); one
that finds a command in flight queues, and when that command returns, the
first queued lookup takes the queue and sends it as one MGET, handing each
the value for its key. Nothing else is scheduled (no task, no timer).

Each queued lookup waits inside its own span ("GET" with
`lattice.redis.pipelined`), so every request's trace shows its Redis lookup;
the MGET is a child of the request that sent it. A failure reaches every
lookup queued behind the failed command (each then counts it and is served
uncached, as without pipelining, and none waits out a second timeout). A
lookup that gives up while queued is simply skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

_SPAN_ATTRIBUTES: Mapping[str, AttributeValue] = {
    "db.system": "redis",
    "lattice.redis.pipelined": True,
}
_Waiter = tuple[str, "asyncio.Future[Any]"]


class _Lead:
    """Handed to the queued lookup that sends the next batch."""

    __slots__ = ("batch",)

    def __init__(self, batch: list[_Waiter]) -> None:
        self.batch = batch


class GetPipeline:
    """GETs through one redis-py asyncio client, at most one command in flight."""

    def __init__(
        self,
        client: Any,
        tracer: trace.Tracer,
        *,
        mget: Callable[[list[str]], Awaitable[list[Any]]] | None = None,
    ) -> None:
        self._client = client
        #: MGET by default; on a Redis Cluster, slot-grouped MGETs (`redis_client.multi_get`).
        self._mget = mget or client.mget
        self._tracer = tracer
        self._busy = False
        self._queue: list[_Waiter] = []

    async def get(self, key: str) -> bytes | None:
        """The value of `key` (None when absent); raises what Redis raised."""
        if not self._busy:
            self._busy = True
            return await self._finish(self._client.get(key))
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append((key, waiter))
        with self._tracer.start_as_current_span(
            "GET", kind=SpanKind.CLIENT, attributes=_SPAN_ATTRIBUTES
        ):
            try:
                value = await waiter
            except asyncio.CancelledError:
                self._abdicate(waiter)
                raise
            if not isinstance(value, _Lead):
                return value
            return await self._finish(self._send(key, value.batch))

    async def _finish(self, command: Awaitable[Any]) -> Any:
        """Run the command in flight, then let the queue go next; when Redis
        failed, the queued lookups fail with it (they would wait out the same
        timeout, and the caller's breaker now skips Redis)."""
        try:
            result = await command
        except Exception as exc:
            self._fail_queue(exc)
            raise
        except BaseException:
            self._hand_over()
            raise
        self._hand_over()
        return result

    async def _send(self, key: str, batch: list[_Waiter]) -> Any:
        """MGET for this lookup's key and the batch's; answer the batch."""
        keys = list(dict.fromkeys([key, *(k for k, _ in batch)]))
        try:
            values = await self._mget(keys)
        except Exception as exc:
            for _key, waiter in batch:
                if not waiter.done():
                    waiter.set_exception(exc)
            raise
        except BaseException:  # cancelled: the batch goes next, without this key
            self._queue[:0] = batch
            raise
        found = dict(zip(keys, values, strict=True))
        for k, waiter in batch:
            if not waiter.done():
                waiter.set_result(found[k])
        return found[key]

    def _fail_queue(self, exc: Exception) -> None:
        queue, self._queue = self._queue, []
        for _key, waiter in queue:
            if not waiter.done():
                waiter.set_exception(exc)
        self._busy = False

    def _abdicate(self, waiter: asyncio.Future[Any]) -> None:
        """A lookup cancelled just after it was made the next sender: pass it on."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            lead = waiter.result()
            if isinstance(lead, _Lead):
                self._queue[:0] = lead.batch
                self._hand_over()

    def _hand_over(self) -> None:
        """The command in flight returned: the first live queued lookup sends
        the rest of the queue next, or nothing is in flight any more."""
        queue, self._queue = self._queue, []
        for i, (_key, waiter) in enumerate(queue):
            if not waiter.done():
                waiter.set_result(_Lead([w for w in queue[i + 1 :] if not w[1].done()]))
                return
        self._busy = False
