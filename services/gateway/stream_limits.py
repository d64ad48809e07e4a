"""Bounds on the server streams the gateway holds open: per tenant, and per idle time.

A server stream (GenerateStream, Watch, WatchJob, DownloadArtifact) pins an
upstream call, a task and buffers in the gateway for as long as it lasts, so
one tenant opening thousands of idle Watch streams could exhaust it for all.
`StreamSlots` caps the streams a tenant has open at once on this replica
(RESOURCE_EXHAUSTED with RetryInfo beyond it), and `idle_limited` ends a
stream that has carried nothing for too long with UNAVAILABLE, which tells a
client to reconnect (and resume, e.g. Watch from its last revision). The
per-connection cap is gRPC's own (`grpc.max_concurrent_streams`, see
`services.runtime.server.server_options`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
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


async def idle_limited(stream: AsyncIterator[T], seconds: float) -> AsyncGenerator[T, None]:
    """`stream`, ended with UNAVAILABLE when `seconds` pass without a message (0 = never)."""
    if seconds <= 0:
        async for item in stream:
            yield item
        return
    iterator = aiter(stream)
    while True:
        try:
            item = await asyncio.wait_for(anext(iterator), seconds)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise Unavailable(
                f"stream idle for {seconds:g}s; reconnect (and resume where it left off)",
                retry_after=0.0,
            ) from None
        yield item
