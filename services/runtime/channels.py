"""Client channels for calls between Lattice services.

A channel from here injects W3C trace context (OpenTelemetry), forwards the
current request id, gives every call a deadline no later than the inbound
RPC's (or a default), retries UNAVAILABLE through gRPC's own retry policy,
and keeps idle connections alive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import grpc
from grpc import aio
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.sdk.trace import TracerProvider

from services.runtime.context import REQUEST_ID_KEY, remaining_time, request_id_var

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


def _propagated(
    details: aio.ClientCallDetails, default_timeout: float | None
) -> aio.ClientCallDetails:
    """Copy of `details` with the request id added and the deadline capped."""
    metadata = aio.Metadata(*(details.metadata or ()))
    request_id = request_id_var.get()
    if request_id and REQUEST_ID_KEY not in metadata:
        metadata.add(REQUEST_ID_KEY, request_id)
    timeout = details.timeout if details.timeout is not None else default_timeout
    inbound = remaining_time()
    if inbound is not None:
        timeout = max(0.0, inbound if timeout is None else min(timeout, inbound))
    return aio.ClientCallDetails(
        method=details.method,
        timeout=timeout,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class _PropagateUnaryUnary(aio.UnaryUnaryClientInterceptor):
    def __init__(self, default_timeout: float) -> None:
        self._default_timeout = default_timeout

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_propagated(client_call_details, self._default_timeout), request)


class _PropagateUnaryStream(aio.UnaryStreamClientInterceptor):
    """Streams get no default deadline (a Watch may run for days)."""

    def __init__(self, default_timeout: float | None) -> None:
        self._default_timeout = default_timeout

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_propagated(client_call_details, self._default_timeout), request)


class _PropagateStreamUnary(aio.StreamUnaryClientInterceptor):
    def __init__(self, default_timeout: float) -> None:
        self._default_timeout = default_timeout

    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return await continuation(
            _propagated(client_call_details, self._default_timeout), request_iterator
        )


class _PropagateStreamStream(aio.StreamStreamClientInterceptor):
    def __init__(self, default_timeout: float | None) -> None:
        self._default_timeout = default_timeout

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return await continuation(
            _propagated(client_call_details, self._default_timeout), request_iterator
        )


def create_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    default_timeout: float = DEFAULT_TIMEOUT_SECONDS,
    max_message_bytes: int = 16 * 1024 * 1024,
    retries: int = 3,
    tracer_provider: TracerProvider | None = None,
    extra_options: Sequence[tuple[str, Any]] = (),
) -> aio.Channel:
    """An aio channel to another Lattice service with propagation built in.

    `default_timeout` applies to unary-response calls that set none; streams
    get none, but every call is capped by the inbound RPC's deadline.
    """
    interceptors = [
        *aio_client_interceptors(tracer_provider=tracer_provider),
        _PropagateUnaryUnary(default_timeout),
        _PropagateUnaryStream(None),
        _PropagateStreamUnary(default_timeout),
        _PropagateStreamStream(None),
    ]
    options = [*channel_options(max_message_bytes, retries), *extra_options]
    if credentials is None:
        return aio.insecure_channel(target, options=options, interceptors=interceptors)
    return aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
