"""Bounds on the server streams the gateway holds open: per tenant, and per idle time.

A server stream (GenerateStream, Watch, WatchJob, DownloadArtifact) pins an
upstream call, a task and buffers in the gateway for as long as it lasts, so
one tenant opening thousands of idle Watch streams could exhaust it for all.
`StreamSlots` caps the streams a tenant has open at once on this replica
(RESOURCE_EXHAUSTED with RetryInfo beyond it), and `idle_limited` ends a
stream that has carried nothing for too long with UNAVAILABLE, which tells a
client to reconnect (and resume, e.g. Watch from its last revision). The
per-connection cap is gRPC's own (`grpc.max_concurrent_streams`, see
`services.runtime.server.server_options`). `IdleTimer` is the one clock
behind both idle limits (this one and the HTTP front's event streams).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from types import TracebackType
from typing import TypeVar

from lattice.errors import ResourceExhausted, Unavailable

T = TypeVar("T")


class StreamSlots:
    """How many server streams each tenant has open; at most `per_tenant` (0 = no cap)."""

    def __init__(self, per_tenant: int) -> None:
        self._per_tenant = per_tenant
        self._open: dict[str, int] = {}

    def open_streams(self, tenant: str) -> int:
        return self._open.get(tenant, 0)

    @contextlib.contextmanager
    def hold(self, tenant: str) -> Iterator[None]:
        """One slot for the duration of a stream; RESOURCE_EXHAUSTED when none is left."""
        count = self._open.get(tenant, 0)
        if self._per_tenant and count >= self._per_tenant:
            raise ResourceExhausted(
                f"tenant {tenant!r} has {count} streams open, the most this gateway allows; "
                "close one or retry later",
                retry_after=1.0,
                subject=f"tenant:{tenant}",
                quota="concurrent_streams",
            )
        self._open[tenant] = count + 1
        try:
            yield
        finally:
            left = self._open[tenant] - 1
            if left:
                self._open[tenant] = left
            else:
                del self._open[tenant]


class IdleTimer:
    """Ends any wait of one stream that lasts `seconds`, with one timer per stream.

    Why not `asyncio.timeout` around each wait: it arms and cancels a loop timer
    for every message, 4.3 us of the HTTP front's ~55 us per streamed token
    (`asyncio.wait_for` also starts a task per message). Here a timer is armed
    once and moved only when it fires (once per `seconds` of a live stream): a
    wait just notes its start (`waiting()`) and end (`woke()`), so a message
    costs a clock read. The limit is the same: time between waits (the
    consumer sending what came) never counts, and a wait that reaches
    `seconds` is cancelled and the `with` block raises TimeoutError, as
    `asyncio.timeout` does; a cancellation from elsewhere stays a
    CancelledError.

    Entered in the task that iterates the stream, and `woke()` before anything
    else is awaited or yielded: the timer cancels that task when it fires
    during a wait.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._since: float | None = None
        self._expired = False

    def __enter__(self) -> IdleTimer:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("IdleTimer is used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = self._loop.call_at(
            self._loop.time() + self._seconds, self._fire
        )
        return self

    def waiting(self) -> None:
        """A wait for the next message starts now."""
        self._since = self._loop.time()

    def woke(self) -> None:
        """The wait is over (a message, the end, or an error)."""
        self._since = None

    def _fire(self) -> None:
        since = self._since
        now = self._loop.time()
        if since is None:  # between waits: no wait can end before now + seconds
            self._handle = self._loop.call_at(now + self._seconds, self._fire)
        elif now < since + self._seconds:  # the wait in progress started later
            self._handle = self._loop.call_at(since + self._seconds, self._fire)
        else:
            self._handle = None
            self._expired = True
            self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc


async def idle_limited(stream: AsyncIterator[T], seconds: float) -> AsyncGenerator[T, None]:
    """`stream`, ended with UNAVAILABLE when `seconds` pass without a message (0 = never)."""
    if seconds <= 0:
        async for item in stream:
            yield item
        return
    iterator = aiter(stream)
    try:
        with IdleTimer(seconds) as timer:
            while True:
                timer.waiting()
                try:
                    item = await anext(iterator)
                except StopAsyncIteration:
                    return
                finally:
                    timer.woke()
                yield item
    except TimeoutError:
        raise Unavailable(
            f"stream idle for {seconds:g}s; reconnect (and resume where it left off)",
            retry_after=0.0,
        ) from None
