"""The server interceptor chain shared by every Lattice service.

Order (outermost first): OpenTelemetry server spans with W3C trace-context
extraction (from `opentelemetry-instrumentation-grpc`), then `RequestInterceptor`
which binds the request id and deadline, counts and times the RPC, logs it,
and maps exceptions to status codes in one place.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from lattice._errors import Internal, LatticeError, Unimplemented
from services.runtime.context import (
    REQUEST_ID_KEY,
    deadline_var,
    new_request_id,
    request_id_var,
)
from services.runtime.telemetry import RpcMetrics

log = logging.getLogger("lattice.rpc")

#: Methods too chatty to log at INFO (health probes, reflection).
_QUIET_PREFIXES = ("/grpc.health.", "/grpc.reflection.")


async def abort_with(context: aio.ServicerContext, error: LatticeError) -> None:
    """End the RPC with `error`'s code, message and google.rpc details."""
    status = error.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


def _as_lattice_error(exc: BaseException, method: str) -> LatticeError:
    if isinstance(exc, LatticeError):
        return exc
    if isinstance(exc, NotImplementedError):
        return Unimplemented(f"{method} is not implemented yet")
    log.exception("unhandled error in %s", method, exc_info=exc)
    return Internal("internal error; see the server log for the request id")


class RequestInterceptor(aio.ServerInterceptor):
    """Request id, deadline, metrics, access log and exception->status mapping."""

    def __init__(self, metrics: RpcMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        metadata = dict(handler_call_details.invocation_metadata or ())
        inbound_id = metadata.get(REQUEST_ID_KEY, "")
        wrap = _Wrapper(self._metrics, method, inbound_id if isinstance(inbound_id, str) else "")
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap.unary(handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap.stream(handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap.unary(handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            wrap.stream(handler.stream_stream),
            handler.request_deserializer,
            handler.response_serializer,
        )


class _Wrapper:
    """Wraps one RPC's behaviour; unary and streaming share the bookkeeping."""

    def __init__(self, metrics: RpcMetrics, method: str, request_id: str) -> None:
        self._metrics = metrics
        self._method = method
        self._request_id = request_id or new_request_id()
        self._quiet = method.startswith(_QUIET_PREFIXES)

    def _enter(self, context: aio.ServicerContext) -> float:
        request_id_var.set(self._request_id)
        remaining = context.time_remaining()
        deadline_var.set(None if remaining is None else time.monotonic() + remaining)
        self._metrics.in_flight.inc()
        return time.perf_counter()

    def _exit(self, started: float, code: grpc.StatusCode, error: LatticeError | None) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.in_flight.dec()
        self._metrics.requests.labels(self._method, code.name).inc()
        self._metrics.duration.labels(self._method).observe(elapsed)
        if self._quiet and error is None:
            return
        level = (
            logging.WARNING
            if error is not None and code != grpc.StatusCode.CANCELLED
            else logging.INFO
        )
        log.log(
            level,
            "%s %s %.1fms",
            self._method,
            code.name,
            elapsed * 1000,
            extra={
                "rpc_method": self._method,
                "rpc_code": code.name,
                "error": error.message if error else "",
            },
        )

    def unary(self, behavior: Callable[..., Awaitable[Any]]):
        async def handle(request: Any, context: aio.ServicerContext) -> Any:
            started = self._enter(context)
            try:
                response = await behavior(request, context)
            except BaseException as exc:
                await self._fail(exc, context, started)
                raise
            self._exit(started, _final_code(context), None)
            return response

        return handle

    def stream(self, behavior: Callable[..., Any]):
        async def handle(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            started = self._enter(context)
            try:
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:
                    await result
            except BaseException as exc:
                await self._fail(exc, context, started)
                raise
            self._exit(started, _final_code(context), None)

        return handle

    async def _fail(self, exc: BaseException, context: aio.ServicerContext, started: float) -> None:
        """Record the failure and, for our own errors, abort with the mapped status."""
        if isinstance(exc, aio.AbortError):
            self._exit(started, _final_code(context), None)
            return
        if not isinstance(exc, Exception):  # CancelledError, KeyboardInterrupt
            self._exit(started, grpc.StatusCode.CANCELLED, None)
            return
        error = _as_lattice_error(exc, self._method)
        self._exit(started, error.code, error)
        await abort_with(context, error)


def _final_code(context: aio.ServicerContext) -> grpc.StatusCode:
    code = context.code()
    if code is None:
        return grpc.StatusCode.OK
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
