"""Run one Redis script for many concurrent callers in as few round trips as load allows.

While a call is on its way to Redis, calls that arrive are queued; when it
returns, the queue goes out as one pipeline of EVALSHAs (and so on while the
queue refills). At low load every call goes out at once, so latency is that
of a single call; under load, N callers share a round trip and a system call
instead of taking N pooled connections. Each script still runs atomically
and in arrival order, so limits enforced by the script stay exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from services.runtime.redis_client import AnyRedis

_Waiter = tuple[Sequence[Any], Sequence[Any], asyncio.Future]


class ScriptBatcher:
    """`await batcher(keys, args)` behaves like `await script(keys=keys, args=args)`."""

    def __init__(self, client: AnyRedis, script: AsyncScript) -> None:
        self._client = client
        self._script = script
        self._busy = False
        self._queue: list[_Waiter] = []
        self._drain: asyncio.Task[None] | None = None

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        if self._busy:
            future = asyncio.get_running_loop().create_future()
            self._queue.append((keys, args, future))
            return await future
        self._busy = True
        try:
            return await self._script(keys=keys, args=args)
        finally:
            if self._queue:
                self._drain = asyncio.ensure_future(self._send_queued())
            else:
                self._busy = False

    async def _send_queued(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._busy = False

    async def _send(self, batch: list[_Waiter]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # connection lost, timeout, cancelled: all of them fail
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
            if not isinstance(exc, Exception):
                raise
            return
        for (keys, args, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away
                continue
            if isinstance(result, NoScriptError):  # script cache flushed: load and run
                try:
                    result = await self._script(keys=keys, args=args)
                except Exception as exc:
                    result = exc
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
