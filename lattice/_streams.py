"""Server-streaming calls as iterators that cancel the call when dropped.

Breaking out of a `for` loop drops the iterator; `__del__` (or leaving a
`with` block, or `cancel()`) cancels the RPC, so the server stops working on
it (for GenerateStream: stops generating) instead of running to the end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import grpc
from grpc import aio

from lattice.errors import from_rpc_error

T = TypeVar("T")


class Stream(Generic[T]):
    """An iterator over a server stream; `cancel()` or dropping it ends the call."""

    def __init__(self, call: Any, convert: Callable[[Any], T]) -> None:
        self._call = call
        self._convert = convert
        self._cancelled = False

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        try:
            message = next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise from_rpc_error(exc) from exc
        return self._convert(message)

    def cancel(self) -> None:
        """Stop the call; the server sees CANCELLED. Safe to call twice."""
        if not self._cancelled:
            self._cancelled = True
            self._call.cancel()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        call = getattr(self, "_call", None)
        if call is not None and not getattr(self, "_cancelled", True):
            call.cancel()


class AsyncStream(Generic[T]):
    """An async iterator over a server stream; `cancel()` or dropping it ends the call."""

    def __init__(self, call: aio.UnaryStreamCall, convert: Callable[[Any], T]) -> None:
        self._call = call
        self._convert = convert
        self._cancelled = False

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        try:
            message = await self._call.read()
        except grpc.RpcError as exc:
            if self._cancelled and exc.code() == grpc.StatusCode.CANCELLED:
                raise StopAsyncIteration from None
            raise from_rpc_error(exc) from exc
        except asyncio.CancelledError:
            if self._cancelled:
                raise StopAsyncIteration from None
            raise
        if message is aio.EOF:
            raise StopAsyncIteration
        return self._convert(message)

    def cancel(self) -> None:
        """Stop the call; the server sees CANCELLED. Safe to call twice."""
        if not self._cancelled:
            self._cancelled = True
            self._call.cancel()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.cancel()

    def __del__(self) -> None:
        call = getattr(self, "_call", None)
        if call is not None and not getattr(self, "_cancelled", True):
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                call.cancel()
