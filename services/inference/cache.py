"""The response cache: Redis for storage, an in-process tier in front of it,
single-flight in process.

Only deterministic requests are cached (the caller decides); the key is the
sha256 of the caller's tenant, the serving version's artifact digest and the
canonical request, so a new version can never serve an old version's answer
and one tenant never sees another's (not even as a `cached` flag), while two
versions with identical bytes share entries (their answers are identical too).
Values in Redis are sealed (AES-GCM from the key ring, see `sealing`): an
entry that fails authentication is ignored, counted and recomputed.

The local tier keeps recently used answers *decoded* (no Redis round trip, no
JSON parsing on a hot key). It is safe to keep per replica because an entry
never changes: its key already names the artifact and the request, so there is
nothing to invalidate; it is bounded by entries and by bytes (the encoded size)
and entries expire with the Redis TTL.

Redis is an optimisation, never a dependency: every call has a short timeout,
and after a failure Redis is skipped for `retry_interval` (a small circuit
breaker, so an outage does not add a timeout to every request). Each failure
is counted and logged; the request is then simply served uncached (or from
the local tier, which needs no Redis).

Single-flight: identical keys in flight at the same time share one
computation. The computation runs as its own task, so one caller giving up
does not cancel it for the others; it is cancelled only when every caller has
gone.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from services.inference.pipelining import GetPipeline
from services.inference.sealing import BrokenSeal, CacheSealer
from services.runtime import redis_client

log = logging.getLogger(__name__)

#: v2: values are sealed (see `sealing`) and keys name the tenant.
KEY_PREFIX = "lattice:inference:v2:"
# One encoder for every key (json.dumps with options builds a new one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tenant_identity(tenant: str, version_identity: str) -> str:
    """What a tenant's answers on one version are bound to: no entry, local or in
    Redis, is ever shared between tenants (nor, so, is the `cached` flag)."""
    return f"{tenant}\0{version_identity}"


def cache_key(artifact_digest: str, canonical: Mapping[str, Any]) -> str:
    """Key for a canonical request (a JSON-able mapping) on one artifact."""
    body = _CANONICAL.encode(canonical)
    digest = hashlib.sha256(f"{artifact_digest}\0{body}".encode()).hexdigest()
    return KEY_PREFIX + digest


class CacheSlot:
    """Where one request's answer is cached. The local tier is keyed by the
    request itself (`local`: a hashable of the version's identity and the
    request's deciding fields), so a hot key costs no canonical JSON and no
    sha256; the Redis key (the digest above) is computed only when Redis is
    asked. `local_size` approximates the memory the local key holds."""

    __slots__ = ("_canonical", "_identity", "_key", "local", "local_size")

    def __init__(
        self,
        identity: str,
        local: Hashable,
        local_size: int,
        canonical: Callable[[], Mapping[str, Any]],
    ) -> None:
        self._identity = identity
        self.local = (identity, local)
        self.local_size = local_size
        self._canonical = canonical
        self._key: str | None = None

    @property
    def key(self) -> str:
        """The Redis key (computed once)."""
        if self._key is None:
            self._key = cache_key(self._identity, self._canonical())
        return self._key


class CacheObserver:
    """Hooks for metrics; the default does nothing."""

    def lookup(self, result: str) -> None:
        """result: "hit", "miss" or "error"."""

    def error(self, operation: str) -> None:
        """A Redis `operation` ("get"/"set") failed or timed out."""

    def coalesced(self) -> None:
        """A request shared another identical request's computation."""


class LocalCache:
    """An in-process LRU of decoded answers with a TTL, bounded by entry count
    and by the answers' encoded size (what they would take in Redis)."""

    def __init__(self, entries: int, max_bytes: int, ttl_seconds: float) -> None:
        self._entries = entries
        self._max_bytes = max_bytes
        self._ttl = ttl_seconds
        self._bytes = 0
        # key -> (expires, value, size)
        self._data: collections.OrderedDict[Hashable, tuple[float, Any, int]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._data)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Any | None:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return item[1]

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if size > self._max_bytes:
            return  # would evict everything else
        if key in self._data:
            self._drop(key)
        self._data[key] = (time.monotonic() + self._ttl, value, size)
        self._bytes += size
        while len(self._data) > self._entries or self._bytes > self._max_bytes:
            _key, (_expires, _value, dropped) = self._data.popitem(last=False)
            self._bytes -= dropped

    def _drop(self, key: Hashable) -> None:
        self._bytes -= self._data.pop(key)[2]


class ResponseCache:
    """Answers in Redis that never raise and never wait long, behind a local
    tier of decoded answers (`local_entries` > 0 and `local_bytes` > 0)."""

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
        local_bytes: int = 64 * 1024 * 1024,
        sealer: CacheSealer,
    ) -> None:
        self.url = url
        self.ttl_seconds = ttl_seconds
        self._sealer = sealer
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._observer = observer or CacheObserver()
        self._client = redis_client.connect(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # the breaker below retries, not the client
        )
        RedisInstrumentor.instrument_client(self._client, tracer_provider=tracer_provider)
        self._gets = GetPipeline(
            self._client,
            trace.get_tracer(__name__, tracer_provider=tracer_provider),
            mget=redis_client.multi_get(self._client),
        )
        self._down_until = 0.0
        self.local = (
            LocalCache(local_entries, local_bytes, ttl_seconds)
            if local_entries > 0 and local_bytes > 0
            else None
        )

    @property
    def available(self) -> bool:
        """False while the breaker skips Redis after a failure."""
        return time.monotonic() >= self._down_until

    def get_local(self, slot: CacheSlot) -> Any | None:
        """The decoded answer from the local tier, or None; no await, no
        hashing beyond the request's own, so a hot key costs a dict lookup."""
        local = self.local
        if local is None:
            return None
        value = local.get(slot.local)
        if value is not None:
            self._observer.lookup("hit_local")
        return value

    async def get(self, slot: CacheSlot, decode: Callable[[bytes], Any]) -> Any | None:
        """The decoded answer, or None on a miss, when Redis is unavailable or
        when the stored bytes cannot be decoded (then it is a miss)."""
        if (value := self.get_local(slot)) is not None:
            return value
        return await self.get_remote(slot, decode)

    async def get_remote(self, slot: CacheSlot, decode: Callable[[bytes], Any]) -> Any | None:
        """`get` without the local tier (the caller already looked there); a
        hit is kept in the local tier."""
        if not self.available:
            self._observer.lookup("error")
            return None
        key = slot.key
        try:
            # socket_timeout bounds the call: no wait_for (it costs a task per call).
            raw = await self._gets.get(key)
        except Exception as exc:
            self._failed("get", exc)
            self._observer.lookup("error")
            return None
        if raw is None:
            self._observer.lookup("miss")
            return None
        try:
            raw = self._sealer.open(key, raw)
        except BrokenSeal as exc:
            # Forged, corrupted or copied from another key: never served; the
            # request recomputes and its answer replaces the entry.
            log.warning("ignoring cache entry %s: %s", key, exc)
            self._observer.lookup("rejected")
            return None
        try:
            value = decode(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable cache entry %s: %s", key, exc)
            self._observer.lookup("miss")
            return None
        self._observer.lookup("hit")
        if self.local is not None:
            self.local.put(slot.local, value, len(raw) + slot.local_size)
        return value

    async def set(self, slot: CacheSlot, value: Any, encode: Callable[[Any], bytes]) -> None:
        """Store with the TTL; failures are counted and otherwise ignored."""
        raw = encode(value)
        if self.local is not None:
            self.local.put(slot.local, value, len(raw) + slot.local_size)
        if not self.available:
            return
        key = slot.key
        try:
            await self._client.set(key, self._sealer.seal(key, raw), ex=self.ttl_seconds)
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
        self._flights: dict[Hashable, tuple[asyncio.Task[Any], list[int]]] = {}
        self._observer = observer or CacheObserver()

    def __len__(self) -> int:
        return len(self._flights)

    async def do(self, key: Hashable, compute: Callable[[], Awaitable[Any]]) -> tuple[Any, bool]:
        """Run `compute` once per key at a time; returns (result, shared),
        shared being True for callers that joined an existing flight."""
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:
            task = asyncio.ensure_future(compute())
            flight = (task, [0])
            self._flights[key] = flight
            task.add_done_callback(functools.partial(self._forget, key, flight))
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

    def _forget(
        self, key: Hashable, flight: tuple[asyncio.Task[Any], list[int]], _task: asyncio.Task[Any]
    ) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        task = flight[0]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning
