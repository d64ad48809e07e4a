"""Lattice errors as HTTP responses: status codes, OpenAI's error shape, Retry-After.

The status code follows Google's `google.rpc.Code` to HTTP mapping (the one
grpc-gateway and Envoy's transcoder use), so `/v1` and `/api/v1` agree. The
body is OpenAI's `{"error": {message, type, param, code}}`; the message is the
LatticeError's own (written for people; never a class name or stack trace).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

import grpc
from google.rpc import error_details_pb2
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lattice.errors import Internal, LatticeError, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

#: google.rpc.Code -> HTTP status (google/rpc/code.proto).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

#: OpenAI's `type` for each HTTP status its SDKs turn into a distinct exception.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}

#: Retry-After when an UNAVAILABLE carries no RetryInfo: replicas come back in seconds.
DEFAULT_UNAVAILABLE_RETRY_SECONDS = 1


class PayloadTooLarge(LatticeError):
    """The request body is over the configured limit (HTTP 413)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


def as_lattice_error(exc: Exception) -> LatticeError:
    """Our own errors pass through; anything else is logged and becomes a generic 500."""
    if isinstance(exc, LatticeError):
        return exc
    log.error("unhandled error on the HTTP front", exc_info=exc)
    return Internal("internal error; see the gateway log for the request id")


def http_status(error: LatticeError) -> int:
    if isinstance(error, PayloadTooLarge):
        return 413
    return HTTP_STATUS.get(error.code, 500)


def retry_after(error: LatticeError) -> int | None:
    """Whole seconds a client should wait, for 429 and 503 (None otherwise)."""
    seconds = getattr(error, "retry_after", None)
    if seconds is None:
        for detail in error.details:
            if isinstance(detail, error_details_pb2.RetryInfo):
                seconds = detail.retry_delay.ToTimedelta().total_seconds()
    if seconds is None and isinstance(error, Unavailable):
        seconds = DEFAULT_UNAVAILABLE_RETRY_SECONDS
    if seconds is None:
        return None if not isinstance(error, ResourceExhausted) else 1
    return max(1, math.ceil(seconds))


#: lattice.v1 field paths (as inference names them) -> the OpenAI parameter a client sent.
_OPENAI_PARAMS = {
    "parameters.max_new_tokens": "max_tokens",
    "parameters.temperature": "temperature",
    "parameters.top_p": "top_p",
    "parameters.stop": "stop",
    "parameters.seed": "seed",
    "inputs": "input",
    "routing_key": "user",
}


def _openai_param(field: str) -> str:
    for ours, theirs in _OPENAI_PARAMS.items():
        if field == ours or field.startswith((ours + "[", ours + ".")):
            return theirs + field[len(ours) :]
    return field


def openai_error_body(error: LatticeError, status: int) -> dict[str, object]:
    """OpenAI's error body; a bad field is named as the OpenAI parameter it came from."""
    field = getattr(error, "field", "") or ""
    message = error.message
    param = _openai_param(field)
    if field and param != field and message.startswith(field + ":"):
        message = param + message[len(field) :]
    return {
        "error": {
            "message": message,
            "type": _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "api_error"),
            "param": param or None,
            "code": error.code.name.lower(),
        }
    }


def error_response(exc: Exception, headers: dict[str, str] | None = None) -> JSONResponse:
    """The HTTP answer for a failed request, in OpenAI's shape."""
    error = as_lattice_error(exc)
    status = http_status(error)
    extra = dict(headers or {})
    wait = retry_after(error) if status in (429, 503) else None
    if wait is not None:
        extra["retry-after"] = str(wait)
    return JSONResponse(openai_error_body(error, status), status_code=status, headers=extra)


def mapped(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint with every failure answered by `error_response`: the one place
    the HTTP front maps errors (as the runtime's RPC wrapper does for gRPC)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return error_response(exc)

    return endpoint
