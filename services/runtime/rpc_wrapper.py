"""What every Lattice RPC gets around its handler, applied once at registration.

`RpcWrapper.wrap` takes a method handler and returns one whose behaviour
does, per call: continue the caller's trace in a SERVER span, bind the
request id (returned in trailing metadata) and deadline, verify the caller's
internal token (when the server has a `CallerVerifier`; health and reflection
stay open), count and time the RPC, write the access log line, and map
exceptions to status codes in one place. It is not a
`grpc.aio.ServerInterceptor` because those run per call and rebuild a
handler each time; wrapping when the service is mounted leaves only the
work itself on the hot path (see `services.runtime.mounting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from opentelemetry import trace

from lattice.errors import Internal, LatticeError, Unimplemented
from services.runtime.context import (
    REQUEST_ID_KEY,
    deadline_var,
    new_request_id,
    request_id_var,
)
from services.runtime.decoding import Malformed, raise_if_malformed, tolerant
from services.runtime.identity import caller_var
from services.runtime.internal_tokens import AUTHORIZATION_KEY, CallerVerifier
from services.runtime.logs import AccessLog
from services.runtime.telemetry import RpcMetrics
from services.runtime.tracing import ServerSpans, finish_span, method_attributes

log = logging.getLogger("lattice.rpc")

#: Methods too chatty for the access log (health probes, reflection).
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")
_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_CODES_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


def _request_id_pair() -> tuple[str, str]:
    return (REQUEST_ID_KEY, request_id_var.get())


async def abort_with(context: aio.ServicerContext, error: LatticeError) -> None:
    """End the RPC with `error`'s code, message and google.rpc details (and the request id)."""
    status = error.to_status()
    trailing = (*status.trailing_metadata, _request_id_pair())
    await context.abort(status.code, status.details, trailing)


def _as_lattice_error(exc: BaseException, method: str) -> LatticeError:
    if isinstance(exc, LatticeError):
        return exc
    if isinstance(exc, NotImplementedError):
        return Unimplemented(f"{method} is not implemented yet")
    log.exception("unhandled error in %s", method, exc_info=exc)
    return Internal("internal error; see the server log for the request id")


def _final_code(context: aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    if code is None:
        return _OK
    if isinstance(code, grpc.StatusCode):
        return code
    return _CODES_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)


class RpcWrapper:
    """Builds the per-method wrappers of one server (shared metrics, spans, log)."""

    def __init__(
        self,
        metrics: RpcMetrics,
        spans: ServerSpans,
        access_log: AccessLog,
        verifier: CallerVerifier | None = None,
    ) -> None:
        self._metrics = metrics
        self._spans = spans
        self._access_log = access_log
        self._verifier = verifier

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler, *, raw_requests: bool = False
    ) -> grpc.RpcMethodHandler:
        """The same handler, its behaviour wrapped in `_Method`'s bookkeeping.

        The request deserializer runs inside grpc before any handler code, and
        an exception there becomes UNKNOWN with the exception's class name. It
        is wrapped so that bytes which do not parse arrive as a `Malformed`
        value, which the wrapped behaviour turns into INVALID_ARGUMENT. With
        `raw_requests` the handler gets the request bytes unparsed (the gateway
        authenticates before it parses anything).
        """
        m = _Method(method, self._metrics, self._spans, self._access_log, self._verifier)
        deserializer = None if raw_requests else tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                m.unary(handler.unary_unary, checked=not raw_requests),
                deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                m.stream(handler.unary_stream, checked=not raw_requests),
                deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                m.unary(handler.stream_unary, checked=not raw_requests, streaming=True),
                deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            m.stream(handler.stream_stream, checked=not raw_requests, streaming=True),
            deserializer,
            handler.response_serializer,
        )


class _Method:
    """One method's bookkeeping; everything that does not vary per call is made here."""

    def __init__(
        self,
        method: str,
        metrics: RpcMetrics,
        spans: ServerSpans,
        access_log: AccessLog,
        verifier: CallerVerifier | None = None,
    ) -> None:
        self.method = method
        self._spans = spans
        self._fields = spans.fields
        self._attributes = method_attributes(method)
        self._access_log = access_log
        self._quiet = method.startswith(_QUIET_PREFIXES)
        self._verifier = None if self._quiet else verifier
        self._in_flight = metrics.in_flight
        self._duration = metrics.duration.labels(method)
        self._requests = metrics.requests
        self._counters: dict[grpc.StatusCode, Any] = {}

    def _enter(self, context: aio.ServicerContext) -> tuple[float, trace.Span, Any]:
        """Bind request id, deadline and span for this call; returns its start time,
        its span and its authorization metadata."""
        request_id = ""
        authorization = None
        carrier: dict[str, str] | None = None
        fields = self._fields
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_KEY:
                if isinstance(value, str):
                    request_id = value
            elif key == AUTHORIZATION_KEY:
                authorization = value
            elif key in fields:
                if carrier is None:
                    carrier = {}
                carrier[key] = value
        request_id_var.set(request_id or new_request_id())
        remaining = context.time_remaining()
        deadline_var.set(None if remaining is None else time.monotonic() + remaining)
        span = self._spans.start(self.method, self._attributes, carrier)
        if span.is_recording():
            # Only while the call is live: peer() on a finished call can crash grpc.
            span.set_attribute("network.peer.address", context.peer())
        self._in_flight.inc()
        return time.perf_counter(), span, authorization

    def _verify(self, authorization: Any) -> None:
        """Record the verified caller for `caller_of`; Unauthenticated without one."""
        if self._verifier is not None:
            caller_var.set(self._verifier.verify(authorization))

    def _exit(
        self,
        elapsed: float,
        span: trace.Span,
        code: grpc.StatusCode,
        error: LatticeError | None,
    ) -> None:
        self._in_flight.dec()
        counter = self._counters.get(code)
        if counter is None:
            counter = self._counters[code] = self._requests.labels(self.method, code.name)
        counter.inc()
        self._duration.observe(elapsed)
        if span.is_recording():
            finish_span(span, code)
        if self._quiet and error is None:
            return
        if error is not None and code is not _CANCELLED:
            self._access_log.failed(self.method, code.name, elapsed, error.message)
        else:
            self._access_log.served(self.method, code.name, elapsed)

    def _checked(self, request: Any, streaming: bool) -> Any:
        """The request as the behaviour should see it: parse failures raised, a
        request stream checked message by message."""
        if streaming:
            return _checked_stream(request)
        if request.__class__ is Malformed:
            raise_if_malformed(request)
        return request

    def unary(
        self,
        behavior: Callable[..., Awaitable[Any]],
        *,
        checked: bool = True,
        streaming: bool = False,
    ):
        async def handle(request: Any, context: aio.ServicerContext) -> Any:
            started, span, authorization = self._enter(context)
            requests = request
            try:
                self._verify(authorization)
                if checked:
                    request = self._checked(request, streaming)
                response = await behavior(request, context)
            except BaseException as exc:
                if streaming and isinstance(exc, Exception):
                    await _drain(requests)
                await self._fail(exc, context, started, span)
                raise
            # The caller can quote the request id the logs and traces carry.
            context.set_trailing_metadata((_request_id_pair(),))
            # The response is sent as soon as this returns: its bookkeeping (metrics,
            # span end, access log line) runs on the next turn of the loop instead of
            # in front of it. The callback keeps this call's context (trace ids).
            asyncio.get_running_loop().call_soon(
                self._exit, time.perf_counter() - started, span, _final_code(context), None
            )
            return response

        return handle

    def stream(
        self, behavior: Callable[..., Any], *, checked: bool = True, streaming: bool = False
    ):
        async def handle(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            started, span, authorization = self._enter(context)
            try:
                self._verify(authorization)
                if checked:
                    request = self._checked(request, streaming)
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result
            except BaseException as exc:
                await self._fail(exc, context, started, span)
                raise
            context.set_trailing_metadata((_request_id_pair(),))
            self._exit(time.perf_counter() - started, span, _final_code(context), None)

        return handle

    async def _fail(
        self,
        exc: BaseException,
        context: aio.ServicerContext,
        started: float,
        span: trace.Span,
    ) -> None:
        """Record the failure and, for our own errors, abort with the mapped status."""
        elapsed = time.perf_counter() - started
        if isinstance(exc, aio.AbortError):
            self._exit(elapsed, span, _final_code(context), None)
            return
        if not isinstance(exc, Exception):  # CancelledError, GeneratorExit, KeyboardInterrupt
            self._exit(elapsed, span, _CANCELLED, None)
            return
        error = _as_lattice_error(exc, self.method)
        self._exit(elapsed, span, error.code, error)
        await abort_with(context, error)


#: How long a failed client-streaming call keeps reading what the client still sends.
DRAIN_SECONDS = 1.0


async def _drain(requests: AsyncIterator[Any]) -> None:
    """Read (and drop) the rest of a client's request stream, for a short while.

    An error answered while the client is still writing races with its next
    write, and grpc.aio's client then reports INTERNAL ("Internal error from
    Core") instead of our status. Reading to the client's half-close first lets
    the status arrive intact; a client that keeps writing is cut off after
    `DRAIN_SECONDS`.
    """

    async def read_all() -> None:
        async for _ in requests:
            pass

    with contextlib.suppress(Exception, TimeoutError):
        await asyncio.wait_for(read_all(), DRAIN_SECONDS)


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A client's request stream with each message's parse failure raised in turn."""
    async for request in requests:
        if request.__class__ is Malformed:
            raise_if_malformed(request)
        yield request
