"""Requests and tokens per window, per tenant (optionally per model), in Redis.

Every gateway replica runs the same Lua scripts against one Redis, so the
limit is fleet-wide and exact: each admission is one atomic script that
trims a sliding log (a sorted set scored by Redis' own clock, so replica
clocks do not matter), compares and adds. Tokens are not known when a
request is admitted; they are recorded afterwards from the response's usage
(or, for a stream, from what was actually delivered), and a tenant whose
window already holds `tokens` or more is refused until entries age out.

Admissions that arrive while one is on its way to Redis share the next
round trip (`ScriptBatcher`: a pipeline of the same atomic script).

Redis down: fail-open admits through a per-replica in-memory limiter with
the same limits (and logs a warning); fail-closed answers UNAVAILABLE.

Which limits apply is decided per request (`plan`): a tenant's record in the
registry (`records`, the gateway's Watch-fed view) overrides the configured
defaults, with its own per-model quotas counted apart; a tenant without a
record gets the defaults. A change to a record reaches every replica through
Watch and applies to the next request, without a restart.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from typing import cast

from redis.exceptions import RedisError

from lattice.errors import ResourceExhausted, Unavailable
from lattice.v1 import registry_pb2
from services.gateway.script_batch import ScriptBatcher
from services.runtime import redis_client
from services.runtime.redis_client import AnyRedis

log = logging.getLogger(__name__)

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local cutoff = now - window
local used = 0
if tpm > 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
  if #old > 0 then
    local expired = 0
    for _, m in ipairs(old) do
      expired = expired + (tonumber(string.match(m, ':(%d+)$')) or 0)
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
    if redis.call('DECRBY', KEYS[3], expired) < 0 then redis.call('SET', KEYS[3], 0) end
  end
  used = tonumber(redis.call('GET', KEYS[3]) or '0')
  if used >= tpm then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local retry = window
    if #first == 2 then retry = tonumber(first[2]) + window - now end
    return {0, 'tokens', retry, used}
  end
end
local count = 0
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  count = redis.call('ZCARD', KEYS[1])
  if count >= rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, 'requests', tonumber(first[2]) + window - now, count}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  count = count + 1
end
return {1, '', 0, count}
"""

_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
local total = redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
redis.call('PEXPIRE', KEYS[2], window)
return total
"""


def _member_id() -> str:
    """A unique sorted-set member (128 random bits; an id, not a secret)."""
    return f"{random.getrandbits(128):032x}"


@dataclasses.dataclass(frozen=True)
class QuotaLimits:
    """Limits per subject per sliding window; 0 = unlimited."""

    requests: int = 0
    tokens: int = 0
    window_seconds: float = 60.0
    #: Count per (tenant, model) instead of per tenant.
    per_model: bool = False

    @property
    def enabled(self) -> bool:
        return self.requests > 0 or self.tokens > 0


@dataclasses.dataclass(frozen=True)
class Admission:
    """A request let in; `record_tokens` charges its usage to the same subject."""

    subject: str
    shared: bool
    limits: QuotaLimits = QuotaLimits()


def limits_from_record(quota: registry_pb2.TenantQuota, default_window: float) -> QuotaLimits:
    window = quota.window.ToTimedelta().total_seconds() if quota.HasField("window") else 0
    return QuotaLimits(
        requests=quota.requests, tokens=quota.tokens, window_seconds=window or default_window
    )


TenantRecords = Callable[[str], "registry_pb2.Tenant | None"]


class _LocalLimiter:
    """The same sliding-log rules in memory, for one replica while Redis is down."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._requests: dict[str, collections.deque[float]] = collections.defaultdict(
            collections.deque
        )
        self._tokens: dict[str, collections.deque[tuple[float, int]]] = collections.defaultdict(
            collections.deque
        )
        self._token_sums: dict[str, int] = collections.defaultdict(int)

    def _trim(self, subject: str, now: float, window: float) -> None:
        cutoff = now - window
        requests = self._requests[subject]
        while requests and requests[0] <= cutoff:
            requests.popleft()
        tokens = self._tokens[subject]
        while tokens and tokens[0][0] <= cutoff:
            self._token_sums[subject] -= tokens.popleft()[1]

    def admit(self, subject: str, limits: QuotaLimits) -> tuple[str, float]:
        """('', 0) when admitted, else (which quota, seconds until retry)."""
        now = self._clock()
        window = limits.window_seconds
        self._trim(subject, now, window)
        if limits.tokens and self._token_sums[subject] >= limits.tokens:
            return "tokens", self._tokens[subject][0][0] + window - now
        requests = self._requests[subject]
        if limits.requests and len(requests) >= limits.requests:
            return "requests", requests[0] + window - now
        requests.append(now)
        return "", 0.0

    def record(self, subject: str, tokens: int) -> None:
        self._tokens[subject].append((self._clock(), tokens))
        self._token_sums[subject] += tokens


class QuotaLimiter:
    """Fleet-wide request and token limits, shared through Redis."""

    def __init__(
        self,
        client: AnyRedis | None,
        limits: QuotaLimits,
        *,
        fail_open: bool = True,
        retry_interval: float = 1.0,
        prefix: str = "lattice:quota",
        clock: Callable[[], float] = time.monotonic,
        records: TenantRecords = lambda _tenant: None,
    ) -> None:
        #: The defaults, for tenants without a record.
        self.limits = limits
        self.records = records
        self._client = client
        self._fail_open = fail_open
        self._retry_interval = retry_interval
        self._prefix = prefix
        self._clock = clock
        self._local = _LocalLimiter(clock)
        self._down_until = float("-inf")
        self._warned_at = float("-inf")
        self._admit = (
            ScriptBatcher(client, client.register_script(_ADMIT)) if client is not None else None
        )
        self._record = client.register_script(_RECORD) if client is not None else None
        #: Called with (subject, kind, value) on every decision, for metrics.
        self.on_usage: Callable[[str, str, int], None] = lambda *_: None

    def subject(self, tenant: str, model: str) -> str:
        return f"tenant:{tenant}/model:{model}" if self.limits.per_model else f"tenant:{tenant}"

    def plan(self, tenant: str, model: str) -> tuple[str, QuotaLimits]:
        """The subject a request counts against and its limits (see the module docstring)."""
        record = self.records(tenant)
        if record is not None:
            window = self.limits.window_seconds
            if model in record.model_quotas:
                quota = record.model_quotas[model]
                return f"tenant:{tenant}/model:{model}", limits_from_record(quota, window)
            if record.HasField("quota"):
                return f"tenant:{tenant}", limits_from_record(record.quota, window)
        return self.subject(tenant, model), self.limits

    def _keys(self, subject: str) -> list[str]:
        # One hash tag per subject keeps a subject's keys in one Redis Cluster slot.
        base = f"{self._prefix}:{{{subject}}}"
        return [f"{base}:requests", f"{base}:tokens", f"{base}:token_sum"]

    async def admit(self, tenant: str, model: str) -> Admission | None:
        """Let the request in or raise ResourceExhausted; None when quotas are off."""
        subject, limits = self.plan(tenant, model)
        if not limits.enabled:
            return None
        if self._admit is not None and self._clock() < self._down_until and not self._fail_open:
            raise Unavailable("quota store unavailable; retry shortly")
        if self._admit is not None and self._clock() >= self._down_until:
            window_ms = int(limits.window_seconds * 1000)
            try:
                allowed, kind, retry_ms, used = await self._admit(
                    self._keys(subject),
                    [window_ms, limits.requests, limits.tokens, _member_id()],
                )
            except (RedisError, OSError) as exc:
                self._redis_failed(exc)
            else:
                kind = kind.decode() if isinstance(kind, bytes) else kind
                self.on_usage(subject, kind or "requests", int(used))
                if not allowed:
                    self._refuse(subject, kind, int(retry_ms) / 1000, limits)
                return Admission(subject, shared=True, limits=limits)
        kind, retry_after = self._local.admit(subject, limits)
        if kind:
            self._refuse(subject, kind, retry_after, limits)
        return Admission(subject, shared=False, limits=limits)

    async def record_tokens(self, admission: Admission | None, tokens: int) -> None:
        """Charge `tokens` to the admission's subject (no-op without token limits)."""
        if admission is None or not admission.limits.tokens or tokens <= 0:
            return
        if admission.shared and self._record is not None:
            try:
                await self._record(
                    keys=self._keys(admission.subject)[1:],
                    args=[
                        int(admission.limits.window_seconds * 1000),
                        f"{_member_id()}:{tokens}",
                        tokens,
                    ],
                )
                return
            except (RedisError, OSError) as exc:
                self._redis_failed(exc, raise_closed=False)
        self._local.record(admission.subject, tokens)

    async def usage(self, tenant: str, model: str = "") -> tuple[int, int]:
        """(requests, tokens) in the current window, as Redis sees it (for tests/ops)."""
        assert self._client is not None
        subject, limits = self.plan(tenant, model)
        keys = self._keys(subject)
        now_s, now_us = await self._client.time()
        cutoff = (now_s * 1000 + now_us // 1000) - int(limits.window_seconds * 1000)
        requests = await self._client.zcount(keys[0], f"({cutoff}", "+inf")
        # Members are b"<request id>:<tokens>" (the client does not decode responses).
        entries = cast(
            "list[bytes]", await self._client.zrangebyscore(keys[1], f"({cutoff}", "+inf")
        )
        tokens = sum(int(e.rsplit(b":", 1)[1]) for e in entries)
        return int(requests), tokens

    def _refuse(self, subject: str, kind: str, retry_after: float, limits: QuotaLimits) -> None:
        window = f"{limits.window_seconds:g}s"
        limit = limits.tokens if kind == "tokens" else limits.requests
        raise ResourceExhausted(
            f"{kind} quota of {limit} per {window} exhausted for {subject}; "
            f"retry in {max(retry_after, 0):.1f}s",
            retry_after=max(retry_after, 0.0),
            subject=subject,
            quota=f"{kind} per {window}",
        )

    def _redis_failed(self, exc: BaseException, *, raise_closed: bool = True) -> None:
        now = self._clock()
        self._down_until = now + self._retry_interval
        if now - self._warned_at >= 10:
            self._warned_at = now
            mode = "per-replica limits (fail-open)" if self._fail_open else "refusing (fail-closed)"
            log.warning("quota store unreachable (%s): %s", type(exc).__name__, mode)
        if raise_closed and not self._fail_open:
            raise Unavailable("quota store unavailable; retry shortly") from None

    @property
    def degraded(self) -> bool:
        """True while Redis is considered down."""
        return self._clock() < self._down_until

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def connect(url: str, *, timeout: float = 0.5) -> AnyRedis:
    """A Redis client (one server, Sentinel or Cluster: see `redis_client`) with
    short timeouts: quota checks sit on the hot path."""
    return redis_client.connect(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )
