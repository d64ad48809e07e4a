"""Request bytes that do not parse become INVALID_ARGUMENT, never UNKNOWN.

grpc runs a method's request deserializer before any handler code; when it
raises, grpc answers UNKNOWN with the exception's class name. `tolerant`
wraps a deserializer so a parse failure yields a `Malformed` value instead,
which the RPC wrapper turns into an `InvalidArgument` naming the message
type. `parse` does the same for code that receives raw bytes on purpose (the
gateway parses only after it has authenticated the caller).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from lattice.errors import InvalidArgument

M = TypeVar("M", bound=Message)

_WHY = "does not parse as a {name} (protobuf wire format); check the client's stubs"


class Malformed:
    """Stands for request bytes that did not parse as `type_name`."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


def raise_if_malformed(request: Any) -> None:
    if request.__class__ is Malformed:
        raise InvalidArgument("request", _WHY.format(name=request.type_name))


def _type_name(deserialize: Callable[[bytes], Any]) -> str:
    owner = getattr(deserialize, "__self__", None)  # Message.FromString is a classmethod
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "") or "request message"


def tolerant(
    deserialize: Callable[[bytes], Any] | None,
) -> Callable[[bytes], Any] | None:
    """`deserialize`, answering `Malformed` instead of raising."""
    if deserialize is None:
        return None
    type_name = _type_name(deserialize)

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception:  # DecodeError, RecursionError, invalid UTF-8 ...
            return Malformed(type_name)

    return parse


def parse(data: bytes, message_type: type[M]) -> M:
    """`data` as a `message_type`; InvalidArgument (field "request") if it does not parse."""
    try:
        return message_type.FromString(data)
    except Exception:
        raise InvalidArgument(
            "request", _WHY.format(name=message_type.DESCRIPTOR.full_name)
        ) from None


class Encoded(Generic[M]):
    """A request still in its wire form, parsed on demand (after authentication)."""

    __slots__ = ("data", "message_type")

    def __init__(self, data: bytes, message_type: type[M]) -> None:
        self.data = data
        self.message_type = message_type

    def decode(self, max_bytes: int = 0) -> M:
        """The message; InvalidArgument when over `max_bytes` (0 = no cap) or unparseable."""
        if max_bytes and len(self.data) > max_bytes:
            raise InvalidArgument(
                "request",
                f"{len(self.data)} bytes; this endpoint accepts at most {max_bytes} per message",
            )
        return parse(self.data, self.message_type)


def decoded(request: M | Encoded[M], max_bytes: int = 0) -> M:
    """`request` parsed if it is still `Encoded`, else as it is."""
    if isinstance(request, Encoded):
        return request.decode(max_bytes)
    return request
