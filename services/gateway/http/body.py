"""Reading a JSON request body within limits, with errors a person can act on."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from lattice.errors import InvalidArgument
from services.gateway.http.errors import PayloadTooLarge

M = TypeVar("M", bound=BaseModel)


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def require_json(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise InvalidArgument(
            "content-type", f"expected application/json, got {kind or 'no content type'!r}"
        )


async def read_json(request: Request, limit: int) -> Any:
    """The parsed JSON body: content type checked, size bounded, syntax errors located."""
    require_json(request)
    raw = await read_limited(request, limit)
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidArgument("body", "is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(
            "body", f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


async def read_model(request: Request, model: type[M], limit: int) -> M:
    """The body validated against `model`; the first problem names its field."""
    data = await read_json(request, limit)
    if not isinstance(data, dict):
        raise InvalidArgument("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "body"
        message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise InvalidArgument(field, message) from None
