"""Mount services on a `grpc.aio` server with their handlers wrapped once.

A generated `add_XServicer_to_server(servicer, server)` builds a dict of
method handlers and registers it. `mount` hands it a stand-in server that
keeps that dict, wraps every handler with `RpcWrapper.wrap` and registers
the wrapped ones on the real server as one generic handler per service. A
call then looks its handler up in a dict, as without any interceptor, and
runs the wrapped behaviour directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc import aio

from services.runtime.rpc_wrapper import RpcWrapper


class _Capture:
    """Stands in for the server inside a generated `add_..._to_server` function."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        self.generic: list[grpc.GenericRpcHandler] = []

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.services[service] = handlers

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)


class _WrappingGenericHandler(grpc.GenericRpcHandler):
    """For code that registers only a generic handler: wrap each handler on first use."""

    def __init__(
        self, inner: grpc.GenericRpcHandler, wrapper: RpcWrapper, raw_requests: bool
    ) -> None:
        self._inner = inner
        self._wrapper = wrapper
        self._raw = raw_requests
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            wrapped = self._wrapper.wrap(method, handler, raw_requests=self._raw)
            cached = self._wrapped[method] = (handler, wrapped)
        return cached[1]


def mount(
    server: aio.Server,
    servicer: Any,
    add_to_server: Callable[[Any, Any], None],
    wrapper: RpcWrapper,
    *,
    raw_requests: bool = False,
) -> None:
    """Register `servicer` on `server` through `add_to_server`, handlers wrapped.

    With `raw_requests` the servicer receives each request as its bytes, to
    parse itself (see `services.runtime.decoding.parse`).
    """
    capture = _Capture()
    add_to_server(servicer, capture)
    handlers: list[grpc.GenericRpcHandler] = []
    for service, methods in capture.services.items():
        wrapped = {
            name: wrapper.wrap(f"/{service}/{name}", handler, raw_requests=raw_requests)
            for name, handler in methods.items()
        }
        handlers.append(grpc.method_handlers_generic_handler(service, wrapped))
    if not capture.services:  # hand-written registration: wrap lazily per method
        handlers = [_WrappingGenericHandler(h, wrapper, raw_requests) for h in capture.generic]
    server.add_generic_rpc_handlers(handlers)
