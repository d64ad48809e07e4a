"""Calling a service directly as a given caller, the way the gateway would.

Services learn their caller through `services.runtime.identity.caller_of`;
tests that talk to a registry or trainer without a gateway in front use a
channel whose interceptor adds that caller's identity to every call.
"""

from __future__ import annotations

import collections
from typing import Any

import grpc
from grpc import aio

from services.runtime.identity import Caller

#: An administrator of a test tenant: sees and manages every tenant's objects.
ADMIN = Caller(tenant="ops", subject="test-admin", scopes=frozenset({"admin"}))
ACME = Caller(tenant="acme", subject="alice")
GLOBEX = Caller(tenant="globex", subject="bob")


class _AddCaller:
    """Adds the caller's identity unless the call names its own caller."""

    def __init__(self, caller: Caller) -> None:
        self._identity = caller.metadata()

    def _details(self, details: aio.ClientCallDetails) -> aio.ClientCallDetails:
        metadata = aio.Metadata(*(details.metadata or ()))
        keys = {key for key, _ in self._identity}
        if not any(key in keys for key, _ in metadata):
            for key, value in self._identity:
                metadata.add(key, value)
        return aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files an interceptor under the first of the four kinds it is, so each
# kind gets its own class.
class _UnaryUnary(_AddCaller, aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_AddCaller, aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_AddCaller, aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator) -> Any:
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_AddCaller, aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator) -> Any:
        return await continuation(self._details(details), request_iterator)


def caller_channel(address: str, caller: Caller = ADMIN, **kwargs: Any) -> aio.Channel:
    """An insecure channel whose every call names `caller`."""
    interceptors: list[Any] = [
        kind(caller) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)
    ]
    return aio.insecure_channel(address, interceptors=interceptors, **kwargs)


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _SyncAddCaller(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, caller: Caller) -> None:
        self._identity = caller.metadata()

    def _details(self, details: Any) -> _Details:
        metadata = list(details.metadata or ())
        if not any(key == "x-lattice-tenant" for key, _ in metadata):
            metadata.extend(self._identity)
        return _Details(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator) -> Any:
        return continuation(self._details(details), request_iterator)


def sync_caller_channel(address: str, caller: Caller = ADMIN) -> grpc.Channel:
    """A blocking channel whose every call names `caller`."""
    return grpc.intercept_channel(grpc.insecure_channel(address), _SyncAddCaller(caller))
