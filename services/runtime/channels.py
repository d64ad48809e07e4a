"""Client channels for calls between Lattice services.

A channel from here injects W3C trace context (OpenTelemetry), forwards the
current request id, signs the caller into an internal token (with a
`TokenMinter`, see `internal_tokens`), gives every call a deadline no later than the inbound
RPC's (or a default), retries UNAVAILABLE through gRPC's own retry policy,
and keeps idle connections alive. The propagation wraps each stub method
once instead of running client interceptors per call: grpc.aio turns every
intercepted call into extra tasks, which was most of a cheap call's cost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from functools import partial
from typing import Any

import grpc
from grpc import aio
from opentelemetry import trace

from services.runtime.context import REQUEST_ID_KEY, remaining_time, request_id_var
from services.runtime.internal_tokens import TokenMinter
from services.runtime.tracing import (
    ClientSpans,
    finish_span,
    method_attributes,
    propagation_fields,
)

DEFAULT_TIMEOUT_SECONDS = 30.0


def retry_service_config(max_attempts: int = 3) -> str:
    """gRPC service config: retry UNAVAILABLE with exponential backoff."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{}],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.05s",
                        "maxBackoff": "1s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def channel_options(
    max_message_bytes: int = 16 * 1024 * 1024, retries: int = 3
) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 1 if retries > 1 else 0),
        ("grpc.service_config", retry_service_config(max(retries, 2))),
    ]


async def _finish_client_span(span: trace.Span, call: Any) -> None:
    """Its final status onto a traced call's span, then end it.

    `aio.Call.code()` is the public way to read a status and it is a
    coroutine, so the done-callback schedules this instead of reading grpc's
    private call state. The call is finished by then, so the await returns at
    once; only calls whose span records pay for the task.
    """
    try:
        code = await call.code()
    except Exception:
        code = grpc.StatusCode.UNKNOWN
    finish_span(span, code)


def _end_client_span(span: trace.Span, call: Any) -> None:
    """Done-callback of a traced call (runs on the loop): end its span from a task."""
    task = asyncio.get_running_loop().create_task(_finish_client_span(span, call))
    _span_tasks.add(task)
    task.add_done_callback(_span_tasks.discard)


#: Strong references to the span-ending tasks until they finish.
_span_tasks: set[asyncio.Task[None]] = set()


class _Propagating:
    """A multicallable that adds request id, capped deadline and trace context to each call.

    Built once per stub method (not per call, as client interceptors are), so a
    call costs one metadata list and, when tracing records, one span.
    """

    __slots__ = (
        "_attributes",
        "_default_timeout",
        "_fields",
        "_inner",
        "_method",
        "_minter",
        "_spans",
    )

    def __init__(
        self,
        inner: Any,
        method: str,
        spans: ClientSpans | None,
        default_timeout: float | None,
        minter: TokenMinter | None = None,
    ) -> None:
        self._inner = inner
        self._minter = minter
        self._method = method
        self._attributes = method_attributes(method)
        self._spans = spans
        self._fields = propagation_fields()
        self._default_timeout = default_timeout

    def __call__(
        self, request: Any = None, *, timeout: float | None = None, metadata=None, **kwargs
    ):
        pairs = list(metadata) if metadata else []
        if self._minter is not None:
            pairs = self._minter.authorize(pairs)
        request_id = request_id_var.get()
        if request_id and not any(key == REQUEST_ID_KEY for key, _ in pairs):
            pairs.append((REQUEST_ID_KEY, request_id))
        if timeout is None:
            timeout = self._default_timeout
        inbound = remaining_time()
        if inbound is not None:
            timeout = max(0.0, inbound if timeout is None else min(timeout, inbound))
        span = None
        if self._spans is not None and not any(key in self._fields for key, _ in pairs):
            span, carrier = self._spans.start(self._method, self._attributes)
            pairs.extend(carrier.items())
        call = self._inner(request, timeout=timeout, metadata=pairs, **kwargs)
        if span is not None and span.is_recording():
            call.add_done_callback(partial(_end_client_span, span))
        return call

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class PropagatingChannel(aio.Channel):
    """An `aio.Channel` whose multicallables propagate context (see `_Propagating`)."""

    def __init__(
        self,
        channel: aio.Channel,
        spans: ClientSpans | None,
        unary_timeout: float | None,
        minter: TokenMinter | None = None,
    ) -> None:
        self._channel = channel
        self._spans = spans
        self._unary_timeout = unary_timeout
        self._minter = minter

    def _wrap(self, inner: Any, method: str | bytes, timeout: float | None) -> _Propagating:
        name = method.decode() if isinstance(method, bytes) else method
        return _Propagating(inner, name, self._spans, timeout, self._minter)

    def unary_unary(self, method, *args, **kwargs):
        inner = self._channel.unary_unary(method, *args, **kwargs)
        return self._wrap(inner, method, self._unary_timeout)

    def unary_stream(self, method, *args, **kwargs):
        # Streams get no default deadline (a Watch may run for days).
        return self._wrap(self._channel.unary_stream(method, *args, **kwargs), method, None)

    def stream_unary(self, method, *args, **kwargs):
        inner = self._channel.stream_unary(method, *args, **kwargs)
        return self._wrap(inner, method, self._unary_timeout)

    def stream_stream(self, method, *args, **kwargs):
        return self._wrap(self._channel.stream_stream(method, *args, **kwargs), method, None)

    async def __aenter__(self) -> PropagatingChannel:
        return self

    async def __aexit__(self, exc_type, exc_val, exc_tb) -> None:
        await self._channel.close()

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()


def create_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    default_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_message_bytes: int = 16 * 1024 * 1024,
    retries: int = 3,
    tracer_provider: trace.TracerProvider | None = None,
    extra_options: Sequence[tuple[str, Any]] = (),
    trace_calls: bool = True,
    minter: TokenMinter | None = None,
) -> aio.Channel:
    """An aio channel to another Lattice service with propagation built in.

    `default_timeout` applies to unary-response calls that set none; streams
    get none, but every call is capped by the inbound RPC's deadline. Each
    call gets a CLIENT span whose context travels in the metadata, unless
    `trace_calls` is False (a caller that makes its own spans) or the call's
    metadata already carries a trace context. With a `minter`, every call
    carries a signed internal token for the caller it names (or the one being
    served, or this service) instead of bare identity headers.
    """
    options = [*channel_options(max_message_bytes, retries), *extra_options]
    if credentials is None:
        channel = aio.insecure_channel(target, options=options)
    else:
        channel = aio.secure_channel(target, credentials, options=options)
    spans = ClientSpans(tracer_provider) if trace_calls else None
    return PropagatingChannel(channel, spans, default_timeout, minter)
