"""The response cache: Redis for storage, single-flight in process.

Only deterministic requests are cached (the caller decides); the key is the
sha256 of the serving version's artifact digest and the canonical request, so
a new version can never serve an old version's answer, while two versions
with identical bytes share entries (their answers are identical too).

Redis is an optimisation, never a dependency: every call has a short timeout,
and after a failure Redis is skipped for `retry_interval` (a small circuit
breaker, so an outage does not add a timeout to every request). Each failure
is counted and logged; the request is then simply served uncached.

Single-flight: identical keys in flight at the same time share one
computation. The computation runs as its own task, so one caller giving up
does not cancel it for the others; it is cancelled only when every caller has
gone.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

KEY_PREFIX = "lattice:inference:v1:"


def cache_key(artifact_digest: str, canonical: Mapping[str, Any]) -> str:
    """Key for a canonical request (a JSON-able mapping) on one artifact."""
    body = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(f"{artifact_digest}\0{body}".encode()).hexdigest()
    return KEY_PREFIX + digest


class CacheObserver:
    """Hooks for metrics; the default does nothing."""

    def lookup(self, result: str) -> None:
        """result: "hit", "miss" or "error"."""

    def error(self, operation: str) -> None:
        """A Redis `operation` ("get"/"set") failed or timed out."""

    def coalesced(self) -> None:
        """A request shared another identical request's computation."""


class LocalCache:
    """A small in-process LRU with a TTL in front of Redis. Safe because an
    entry never changes: its key already names the artifact and the request."""

    def __init__(self, entries: int, ttl_seconds: float) -> None:
        self._entries = entries
        self._ttl = ttl_seconds
        self._data: collections.OrderedDict[str, tuple[float, bytes]] = collections.OrderedDict()

    def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def set(self, key: str, value: bytes) -> None:
        self._data[key] = (time.monotonic() + self._ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._entries:
            self._data.popitem(last=False)


class ResponseCache:
    """get/set of bytes in Redis that never raises and never waits long,
    optionally behind a small in-process LRU (`local_entries` > 0)."""

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: int,
        timeout: float = 0.05,
        retry_interval: float = 1.0,
        observer: CacheObserver | None = None,
        tracer_provider: TracerProvider | None = None,
        local_entries: int = 0,
    ) -> None:
        import redis.asyncio as redis
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.ttl_seconds = ttl_seconds
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._observer = observer or CacheObserver()
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # the breaker below retries, not the client
        )
        RedisInstrumentor.instrument_client(self._client, tracer_provider=tracer_provider)
        self._down_until = 0.0
        self._local = LocalCache(local_entries, ttl_seconds) if local_entries > 0 else None

    @property
    def available(self) -> bool:
        """False while the breaker skips Redis after a failure."""
        return time.monotonic() >= self._down_until

    async def get(self, key: str) -> bytes | None:
        """The cached bytes, or None on a miss or when Redis is unavailable."""
        if self._local is not None and (value := self._local.get(key)) is not None:
            self._observer.lookup("hit_local")
            return value
        if not self.available:
            self._observer.lookup("error")
            return None
        try:
            # socket_timeout bounds the call: no wait_for (it costs a task per call).
            value = await self._client.get(key)
        except Exception as exc:
            self._failed("get", exc)
            self._observer.lookup("error")
            return None
        self._observer.lookup("miss" if value is None else "hit")
        if value is not None and self._local is not None:
            self._local.set(key, value)
        return value

    async def set(self, key: str, value: bytes) -> None:
        """Store with the TTL; failures are counted and otherwise ignored."""
        if self._local is not None:
            self._local.set(key, value)
        if not self.available:
            return
        try:
            await self._client.set(key, value, ex=self.ttl_seconds)
        except Exception as exc:
            self._failed("set", exc)

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._observer.error(operation)
        was_up = self.available
        self._down_until = time.monotonic() + self._retry_interval
        if was_up:
            log.warning(
                "response cache unavailable (%s %s: %s); serving uncached, retrying in %.1fs",
                operation,
                type(exc).__name__,
                exc,
                self._retry_interval,
            )

    async def close(self) -> None:
        await self._client.aclose()


class SingleFlight:
    """Coalesces concurrent computations of the same key into one."""

    def __init__(self, observer: CacheObserver | None = None) -> None:
        self._flights: dict[str, tuple[asyncio.Task[Any], list[int]]] = {}
        self._observer = observer or CacheObserver()

    def __len__(self) -> int:
        return len(self._flights)

    async def do(self, key: str, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """Run `compute` once per key at a time; returns (result, shared),
        shared being True for callers that joined an existing flight."""
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            task = asyncio.ensure_future(compute())
            flight = (task, [0])
            self._flights[key] = flight
            task.add_done_callback(lambda _t, k=key, f=flight: self._forget(k, f))
        else:
            self._observer.coalesced()
        task, waiters = flight
        waiters[0] += 1
        try:
            return await asyncio.shield(task), shared
        except asyncio.CancelledError:
            if not task.done() and waiters[0] == 1:
                task.cancel()  # the last caller left: nobody wants the answer
            raise
        finally:
            waiters[0] -= 1

    def _forget(self, key: str, flight: tuple[asyncio.Task[Any], list[int]]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        task = flight[0]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning
