"""Calls to the services behind the gateway: inference replicas and single upstreams.

Inference replicas are a pool: least-in-flight among healthy replicas; a
unary call that fails with UNAVAILABLE before any response is retried on
another replica; a replica failing `consecutive_failures` times in a row is
ejected for a while (doubling on each ejection, as Envoy's outlier
detection does) and then let back in on probation, where one failure ejects
it again. Streams are retried only until the first message arrives.

Channels come from `services.runtime.create_channel`, which propagates the
request id and the caller's (shrinking) deadline. The pool turns off gRPC's
own per-channel retries so that a retry goes to a different replica instead
of the same dead one. Each attempt is one CLIENT span of ours (with the
replica's address and the attempt number) whose W3C trace context goes into
the call's metadata, so the channel's own per-call span is turned off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from grpc import aio
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode

from lattice.errors import Unavailable, from_rpc_error
from services.runtime.channels import create_channel
from services.runtime.context import remaining_time
from services.runtime.internal_tokens import TokenMinter

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OutlierConfig:
    consecutive_failures: int = 3
    base_ejection_seconds: float = 5.0
    max_ejection_seconds: float = 60.0
    #: Never eject more than this share of the pool (at least one stays in).
    max_ejected_fraction: float = 0.5


#: Unary inference calls have no side effects, so besides UNAVAILABLE (never got
#: there) a CANCELLED that we did not cause (the replica shut down mid-call, e.g.
#: killed) is retried on another replica as well.
_UNARY_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


#: Polls in a row a replica may miss before it counts as unresponsive.
UNRESPONSIVE_AFTER = 2


class Replica:
    """One inference replica and its health bookkeeping."""

    def __init__(self, address: str, channel: aio.Channel, stub: Any) -> None:
        self.address = address
        self.channel = channel
        self.stub = stub
        self.in_flight = 0
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected_until = float("-inf")
        #: Liveness polls missed in a row (see `replica_states`).
        self.missed_polls = 0

    def ejected(self, now: float) -> bool:
        return now < self.ejected_until

    @property
    def unresponsive(self) -> bool:
        return self.missed_polls >= UNRESPONSIVE_AFTER


class ReplicaPool:
    """A set of replicas of one service, with failover and outlier detection."""

    def __init__(
        self,
        addresses: Sequence[str],
        stub_type: Callable[[aio.Channel], Any],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        minter: TokenMinter | None = None,
        outlier: OutlierConfig | None = None,
        max_attempts: int = 3,
        deadline_margin: float = 0.1,
        default_timeout: float = 120.0,
        tracer: trace.Tracer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not addresses:
            raise ValueError("at least one upstream address is required")
        self._outlier = outlier or OutlierConfig()
        self._max_attempts = max_attempts
        self._deadline_margin = deadline_margin
        self._tracer = tracer or trace.get_tracer("lattice.gateway")
        self._clock = clock
        self._turn = itertools.count()
        self.replicas = []
        for address in addresses:
            channel = create_channel(
                address,
                credentials=credentials,
                minter=minter,
                retries=1,
                default_timeout=default_timeout,
                trace_calls=False,  # each attempt gets our own CLIENT span below
                # A dns:/// name of a headless Service resolves to every pod: spread
                # calls over all of them rather than pinning the first address.
                extra_options=[
                    ("grpc.lb_policy_name", "round_robin"),
                    # A replica back from a crash is reconnected to within 2 s,
                    # not after gRPC's default backoff of up to 120 s.
                    ("grpc.initial_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                ],
            )
            self.replicas.append(Replica(address, channel, stub_type(channel)))
        #: Called with (address, healthy) whenever a replica is ejected or restored.
        self.on_health: Callable[[str, bool], None] = lambda *_: None

    def candidates(self) -> list[Replica]:
        """Replicas to try, best first: healthy ones by fewest in flight, round-robin ties."""
        now = self._clock()
        start = next(self._turn) % len(self.replicas)
        rotated = self.replicas[start:] + self.replicas[:start]
        live = [r for r in rotated if not r.unresponsive]
        healthy = [r for r in live if not r.ejected(now)]
        if not healthy:  # everything ejected: try the live ones anyway rather than fail
            healthy = sorted(live, key=lambda r: r.ejected_until)
        healthy.sort(key=lambda r: r.in_flight)
        return healthy[: self._max_attempts]

    def _succeeded(self, replica: Replica) -> None:
        if replica.ejected(self._clock()):
            return  # a late answer from before the ejection proves nothing
        if replica.consecutive_failures or replica.ejections:
            if replica.ejections:
                self.on_health(replica.address, True)
            replica.consecutive_failures = 0
            replica.ejections = 0

    def _failed(self, replica: Replica) -> None:
        replica.consecutive_failures += 1
        outlier = self._outlier
        if replica.consecutive_failures < outlier.consecutive_failures:
            return
        now = self._clock()
        if replica.ejected(now):
            return
        ejected = sum(1 for r in self.replicas if r.ejected(now))
        if ejected + 1 > max(1, int(len(self.replicas) * outlier.max_ejected_fraction)):
            return
        if len(self.replicas) == 1:
            return
        replica.ejections += 1
        seconds = min(
            outlier.base_ejection_seconds * 2 ** (replica.ejections - 1),
            outlier.max_ejection_seconds,
        )
        replica.ejected_until = now + seconds
        # On probation after the ejection: the next failure ejects it again.
        replica.consecutive_failures = outlier.consecutive_failures - 1
        log.warning("ejecting upstream %s for %.1fs", replica.address, seconds)
        self.on_health(replica.address, False)

    def _timeout(self) -> float | None:
        """The caller's remaining time less a margin (at most 5% of it).

        The margin leaves the gateway time to relay the upstream's answer or
        error before the caller gives up, and it makes the deadline visibly
        shrink at the next hop despite gRPC rounding timeouts up on the wire.
        """
        remaining = remaining_time()
        if remaining is None:
            return None
        return max(0.0, remaining - min(self._deadline_margin, remaining * 0.05))

    def _attempt(
        self, method: str, replica: Replica, attempt: int, metadata: Sequence[tuple[str, str]]
    ) -> tuple[trace.Span, list[tuple[str, str]]]:
        """A CLIENT span for one attempt, and the metadata carrying its trace context."""
        span = self._tracer.start_span(
            f"upstream {method}",
            kind=SpanKind.CLIENT,
            attributes={"server.address": replica.address, "lattice.attempt": attempt},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        return span, [*metadata, *carrier.items()]

    async def unary(
        self,
        method: str,
        request: Any,
        metadata: Sequence[tuple[str, str]],
        *,
        shadow: bool = False,
    ) -> Any:
        """Call `method`, failing over to another replica on UNAVAILABLE.

        A `shadow` copy goes to one replica and leaves its health alone: the shadow
        version failing says nothing about the replica serving the primary.
        """
        if shadow:
            candidates = self.candidates()
            if not candidates:
                raise _unavailable(None)
            return await self._shadow_attempt(method, candidates[0], request, metadata)
        last: aio.AioRpcError | None = None
        for attempt, replica in enumerate(self.candidates()):
            span, traced = self._attempt(method, replica, attempt, metadata)
            replica.in_flight += 1
            try:
                response = await getattr(replica.stub, method)(
                    request, metadata=traced, timeout=self._timeout()
                )
            except aio.AioRpcError as exc:
                span.set_status(Status(StatusCode.ERROR, exc.code().name))
                if exc.code() not in _UNARY_RETRYABLE:
                    self._succeeded(replica)  # it answered; the answer is the caller's
                    raise from_rpc_error(exc) from None
                self._failed(replica)
                last = exc
                continue
            finally:
                replica.in_flight -= 1
                span.end()
            self._succeeded(replica)
            return response
        raise _unavailable(last)

    async def _shadow_attempt(
        self, method: str, replica: Replica, request: Any, metadata: Sequence[tuple[str, str]]
    ) -> Any:
        """One call of a shadow copy: no failover, no outlier bookkeeping; unary
        calls are awaited whole, streams read to the end."""
        span, traced = self._attempt(method, replica, 0, metadata)
        replica.in_flight += 1
        try:
            call = getattr(replica.stub, method)(request, metadata=traced, timeout=self._timeout())
            if method == "GenerateStream":
                async for _ in call:
                    pass
                return None
            return await call
        except aio.AioRpcError as exc:
            span.set_status(Status(StatusCode.ERROR, exc.code().name))
            raise from_rpc_error(exc) from None
        finally:
            replica.in_flight -= 1
            span.end()

    async def stream(
        self, method: str, request: Any, metadata: Sequence[tuple[str, str]]
    ) -> AsyncGenerator[Any, None]:
        """Stream `method`; fails over only until the first message has arrived."""
        last: aio.AioRpcError | None = None
        for attempt, replica in enumerate(self.candidates()):
            span, traced = self._attempt(method, replica, attempt, metadata)
            call = getattr(replica.stub, method)(request, metadata=traced, timeout=self._timeout())
            replica.in_flight += 1
            try:
                try:
                    first = await call.read()
                except aio.AioRpcError as exc:
                    span.set_status(Status(StatusCode.ERROR, exc.code().name))
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        self._succeeded(replica)
                        raise from_rpc_error(exc) from None
                    self._failed(replica)
                    last = exc
                    continue
                self._succeeded(replica)
                message = first
                while message is not aio.EOF:
                    yield message
                    try:
                        message = await call.read()
                    except aio.AioRpcError as exc:
                        span.set_status(Status(StatusCode.ERROR, exc.code().name))
                        raise from_rpc_error(exc) from None
                return
            finally:
                replica.in_flight -= 1
                call.cancel()
                span.end()
        raise _unavailable(last)

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.channel.close()


def _unavailable(last: aio.AioRpcError | None) -> Unavailable:
    detail = f": {last.details()}" if last is not None and last.details() else ""
    return Unavailable(f"no inference replica could serve the request{detail}")


class Upstream:
    """A single upstream service (registry or trainer): plain forwarding."""

    def __init__(
        self,
        address: str,
        stub_type: Callable[[aio.Channel], Any],
        *,
        credentials: grpc.ChannelCredentials | None = None,
        minter: TokenMinter | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.address = address
        self.channel = create_channel(
            address, credentials=credentials, minter=minter, tracer_provider=tracer_provider
        )
        self._stub = stub_type(self.channel)

    async def unary(self, method: str, request: Any, metadata: Sequence[tuple[str, str]]) -> Any:
        try:
            return await getattr(self._stub, method)(request, metadata=metadata)
        except aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    async def client_stream(
        self, method: str, requests: AsyncIterator[Any], metadata: Sequence[tuple[str, str]]
    ) -> Any:
        """Relay `requests` one write at a time, so that a failure while producing
        them (a message that does not parse) ends the upstream call at once
        instead of leaving it waiting for more."""
        call = getattr(self._stub, method)(metadata=metadata)
        try:
            async for request in requests:
                try:
                    await call.write(request)
                except asyncio.InvalidStateError:  # upstream already answered (an error)
                    break
            else:
                await call.done_writing()
            return await call
        except aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def stream(
        self, method: str, request: Any, metadata: Sequence[tuple[str, str]]
    ) -> AsyncIterator[Any]:
        call = getattr(self._stub, method)(request, metadata=metadata)
        try:
            while (message := await call.read()) is not aio.EOF:
                yield message
        except aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self.channel.close()
