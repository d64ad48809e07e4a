"""One small exception tree, shared by the servers and the client SDK.

Servers raise these from domain code; one RPC wrapper in the shared runtime
turns them into gRPC status codes with `google.rpc` details. The SDK turns a
failed call back into the same classes, so both sides speak one vocabulary.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

#: When to retry an UNAVAILABLE that does not say otherwise.
DEFAULT_RETRY_SECONDS = 1.0

#: Longest status message (and field description) sent to a client.
MAX_MESSAGE_CHARS = 1024


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text`, cut to `limit` characters with a marker when it was longer."""
    if len(text) <= limit:
        return text
    return text[: limit - 20] + f"... ({len(text)} chars)"


def _clipped_bad_request(detail: error_details_pb2.BadRequest) -> error_details_pb2.BadRequest:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(
                field=clip(v.field, 200), description=clip(v.description)
            )
            for v in detail.field_violations
        ]
    )


class LatticeError(Exception):
    """Base of every error Lattice raises or reports."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.message = message
        #: `google.rpc` detail messages (BadRequest, QuotaFailure, RetryInfo ...).
        self.details: list[Message] = list(details)

    def to_status(self) -> grpc.Status:
        """The rich gRPC status for this error (code, message, packed details).

        Message and field descriptions are clipped to `MAX_MESSAGE_CHARS`: they
        travel in trailing metadata, and an echoed 1 MB value would overflow its
        limit and turn the answer into a transport error.
        """
        packed = []
        for detail in self.details:
            if isinstance(detail, error_details_pb2.BadRequest):
                detail = _clipped_bad_request(detail)
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        proto = status_pb2.Status(
            code=self.code.value[0], message=clip(self.message), details=packed
        )
        return rpc_status.to_status(proto)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(LatticeError):
    """The request is malformed; `field` names what to fix."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str, **kwargs: Any) -> None:
        violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=message)
        super().__init__(
            f"{field}: {message}",
            details=[error_details_pb2.BadRequest(field_violations=[violation])],
            **kwargs,
        )
        self.field = field


class NotFound(LatticeError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(LatticeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(LatticeError):
    """The system is not in a state that allows this; `retry_after` says when it will be."""

    code = grpc.StatusCode.FAILED_PRECONDITION

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        details = list(kwargs.pop("details", ()))
        if retry_after is not None:
            details.append(_retry_info(retry_after))
        super().__init__(message, details=details, **kwargs)
        self.retry_after = retry_after


class Aborted(LatticeError):
    """A concurrent change won (e.g. a stale expected_revision); re-read and retry."""

    code = grpc.StatusCode.ABORTED


class Unauthenticated(LatticeError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LatticeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(LatticeError):
    """A quota or limit ran out; `retry_after` (seconds) says when it resets."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        subject: str = "",
        quota: str = "",
        **kwargs: Any,
    ) -> None:
        details = list(kwargs.pop("details", ()))
        if quota:
            violation = error_details_pb2.QuotaFailure.Violation(subject=subject, description=quota)
            details.append(error_details_pb2.QuotaFailure(violations=[violation]))
        if retry_after is not None:
            details.append(_retry_info(retry_after))
        super().__init__(message, details=details, **kwargs)
        self.retry_after = retry_after


class Unavailable(LatticeError):
    """A backend or dependency is down; retrying later may succeed.

    Always retryable, so it always carries a RetryInfo (`retry_after` seconds,
    by default `DEFAULT_RETRY_SECONDS`)."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        details = list(kwargs.pop("details", ()))
        if not any(isinstance(d, error_details_pb2.RetryInfo) for d in details):
            if retry_after is None:
                retry_after = DEFAULT_RETRY_SECONDS
            details.append(_retry_info(retry_after))
        super().__init__(message, details=details, **kwargs)
        self.retry_after = retry_after


class DeadlineExceeded(LatticeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(LatticeError):
    code = grpc.StatusCode.CANCELLED


class Unimplemented(LatticeError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(LatticeError):
    """Something we did not foresee. The message sent to clients stays generic."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[LatticeError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        Aborted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unimplemented,
        Internal,
    )
}


#: Errors whose `retry_after` comes from the status's RetryInfo (None without one).
_RETRYABLE: dict[grpc.StatusCode, type[ResourceExhausted | FailedPrecondition | Unavailable]] = {
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def _retry_info(seconds: float) -> error_details_pb2.RetryInfo:
    delay = duration_pb2.Duration()
    delay.FromTimedelta(_dt.timedelta(seconds=max(0.0, seconds)))
    return error_details_pb2.RetryInfo(retry_delay=delay)


def _unpack_details(status: status_pb2.Status) -> list[Message]:
    known = (
        error_details_pb2.BadRequest,
        error_details_pb2.QuotaFailure,
        error_details_pb2.RetryInfo,
        error_details_pb2.ErrorInfo,
        error_details_pb2.PreconditionFailure,
        error_details_pb2.ResourceInfo,
    )
    unpacked: list[Message] = []
    for packed in status.details:
        for message_type in known:
            if packed.Is(message_type.DESCRIPTOR):
                message = message_type()
                packed.Unpack(message)
                unpacked.append(message)
                break
    return unpacked


def from_rpc_error(error: grpc.RpcError) -> LatticeError:
    """Turn a failed call into the matching LatticeError, with its details."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = error.details() if hasattr(error, "details") else str(error)
    status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    details = _unpack_details(status) if status is not None else []
    retry_after = next(
        (
            d.retry_delay.ToTimedelta().total_seconds()
            for d in details
            if isinstance(d, error_details_pb2.RetryInfo)
        ),
        None,
    )
    result: LatticeError
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        field = next(
            (
                v.field
                for d in details
                if isinstance(d, error_details_pb2.BadRequest)
                for v in d.field_violations
            ),
            "",
        )
        result = InvalidArgument.__new__(InvalidArgument)
        LatticeError.__init__(result, message or "", details=details)
        result.field = field
    elif code in _RETRYABLE:
        retryable = _RETRYABLE[code]
        with_retry = retryable.__new__(retryable)
        LatticeError.__init__(with_retry, message or "", details=details)
        with_retry.retry_after = retry_after
        result = with_retry
    else:
        cls = _BY_CODE.get(code, LatticeError)
        result = cls(message or code.name, details=details)
        if cls is LatticeError:
            result.code = code
    result.__cause__ = error
    return result
