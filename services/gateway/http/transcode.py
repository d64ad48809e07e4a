"""REST/JSON for every annotated lattice.v1 RPC, transcoded generically.

For each `Binding` one route: the request message is built from the path
variables, the query string and the body (protobuf's `json_format`, proto3
JSON names or proto names, unknown fields refused), handed to the *same
servicer* the gRPC server mounts (so it runs through the same `Gateway`), and
the answer is written back as JSON. Adding an RPC with an annotation adds its
route; nothing here names an RPC.

- Server streaming: NDJSON (`application/x-ndjson`), or SSE when the client
  accepts `text/event-stream`; an error after the first message is a last
  `{"error": ...}` line/event.
- `response_body: "<bytes field>"` on a stream: the bytes themselves
  (`application/octet-stream`), streamed (artifact download).
- Client streaming with `body: "<bytes field>"`: path and query fill the first
  message, then the raw HTTP body is streamed as that field (artifact upload).
- Errors: HTTP status per `google.rpc.Code`, body `{"error": {code, message,
  status, details}}` with the `google.rpc` details as JSON (Google's REST style).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from lattice.errors import InvalidArgument, LatticeError
from services.gateway.http.bindings import Binding, resolve_field
from services.gateway.http.body import read_json
from services.gateway.http.errors import as_lattice_error, http_status, retry_after

#: Raw upload bodies are forwarded in messages of at most this many bytes.
UPLOAD_CHUNK_BYTES = 256 * 1024
_NDJSON = "application/x-ndjson"


class HttpInvocation:
    """The part of a gRPC servicer context the gateway servicers read, from HTTP.

    Only the credentials become call metadata: no other header reaches the pipeline.
    """

    def __init__(self, request: Request) -> None:
        self._metadata = tuple(
            ("authorization", v) for v in request.headers.getlist("authorization")
        )

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


# --- errors -------------------------------------------------------------------------------


def status_body(error: LatticeError, status: int) -> dict[str, Any]:
    """`google.rpc.Status` as JSON, in Google's REST error envelope."""
    details = []
    for detail in error.details:
        if isinstance(detail, Message):
            converted = json_format.MessageToDict(detail)
            details.append(
                {"@type": f"type.googleapis.com/{detail.DESCRIPTOR.full_name}", **converted}
            )
    return {
        "error": {
            "code": status,
            "message": error.message,
            "status": error.code.name,
            "details": details,
        }
    }


def status_response(exc: Exception) -> JSONResponse:
    error = as_lattice_error(exc)
    status = http_status(error)
    headers = {}
    wait = retry_after(error) if status in (429, 503) else None
    if wait is not None:
        headers["retry-after"] = str(wait)
    return JSONResponse(status_body(error, status), status_code=status, headers=headers)


# --- building the request -----------------------------------------------------------------


def _scalar(field: FieldDescriptor, raw: str) -> Any:
    """A path or query string as the JSON value json_format expects for `field`."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise InvalidArgument(field.json_name, f"expected true or false, got {raw!r}")
        return lowered in ("true", "1")
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        try:
            return float(raw)
        except ValueError:
            raise InvalidArgument(field.json_name, f"expected a number, got {raw!r}") from None
    return raw  # strings, enums by name, integers (json_format parses numeric strings)


def _field_by_any_name(message: Descriptor, path: str) -> tuple[str, FieldDescriptor]:
    """Resolve a dotted path written with proto names or JSON names."""
    names = []
    current: Descriptor | None = message
    field: FieldDescriptor | None = None
    for part in path.split("."):
        if current is None:
            raise KeyError(path)
        field = current.fields_by_name.get(part) or current.fields_by_camelcase_name.get(part)
        if field is None:
            raise KeyError(path)
        names.append(field.name)
        current = field.message_type
    assert field is not None
    return ".".join(names), field


def _place(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for name in parents:
        target = target.setdefault(name, {})
    target[last] = value


def _from_params(binding: Binding, request: Request) -> dict[str, Any]:
    """Path variables, then (without a `*` body) query parameters, as a JSON dict."""
    message = binding.method.input_type
    data: dict[str, Any] = {}
    for name, path in binding.path_fields.items():
        _place(data, path, _scalar(resolve_field(message, path), request.path_params[name]))
    if binding.body == "*":
        if request.query_params:
            key = next(iter(request.query_params))
            raise InvalidArgument(key, "query parameters are not used here; put it in the body")
        return data
    bound = set(binding.path_fields.values()) | ({binding.body} if binding.body else set())
    for key in request.query_params:
        try:
            path, field = _field_by_any_name(message, key)
        except KeyError:
            raise InvalidArgument(key, "unknown query parameter") from None
        if path in bound or field.type == FieldDescriptor.TYPE_MESSAGE:
            raise InvalidArgument(key, "cannot be set from the query string here")
        values = [_scalar(field, v) for v in request.query_params.getlist(key)]
        repeated = field.is_repeated
        _place(data, path, values if repeated else values[-1])
    return data


def _parse(data: dict[str, Any], message_class: type[Message]) -> Message:
    message = message_class()
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        text = str(exc).split("\n", 1)[0]
        field = "body"
        if text.startswith("Failed to parse ") and " field: " in text:
            field, text = text[len("Failed to parse ") :].split(" field: ", 1)
        if 'no field named "' in text:
            field = text.split('no field named "', 1)[1].split('"', 1)[0]
            text = "unknown field"
        raise InvalidArgument(field, text) from None
    return message


class _Route:
    """The endpoint of one binding."""

    def __init__(self, binding: Binding, servicer: Any, max_body_bytes: int) -> None:
        self.binding = binding
        self._handler = getattr(servicer, binding.method.name)
        self._request_class = GetMessageClass(binding.method.input_type)
        self._max_body = max_body_bytes

    async def handle(self, request: Request) -> Response:
        try:
            return await self._respond(request)
        except Exception as exc:
            return status_response(exc)

    async def _message(self, request: Request) -> Message:
        binding = self.binding
        data = _from_params(binding, request)
        if binding.body == "*":
            body = await read_json(request, self._max_body)
            if not isinstance(body, dict):
                raise InvalidArgument("body", "must be a JSON object")
            data = _merge(body, data)
        elif binding.body:
            _place(data, binding.body, await read_json(request, self._max_body))
        return _parse(data, self._request_class)

    async def _respond(self, request: Request) -> Response:
        context = HttpInvocation(request)
        if self.binding.client_streaming:
            messages = self._upload(
                request, _parse(_from_params(self.binding, request), self._request_class)
            )
            result = await self._handler(messages, context)
            return self._json(result)
        message = await self._message(request)
        if not self.binding.server_streaming:
            return self._json(await self._handler(message, context))
        stream: AsyncGenerator[Message, None] = self._handler(message, context)
        try:
            # The first message decides the status: a refusal is still a 4xx, not a 200.
            first = await anext(stream)
        except StopAsyncIteration:
            return Response(b"", media_type=_NDJSON)
        except BaseException:
            await stream.aclose()
            raise
        field = self.binding.response_field()
        if field is not None and field.type == FieldDescriptor.TYPE_BYTES:
            return StreamingResponse(
                _bytes_of(stream, first, field), media_type="application/octet-stream"
            )
        if "text/event-stream" in request.headers.get("accept", ""):
            return EventSourceResponse(_events(stream, first, field), sep="\n")
        return StreamingResponse(_lines(stream, first, field), media_type=_NDJSON)

    def _json(self, message: Message) -> Response:
        field = self.binding.response_field()
        return JSONResponse(_to_json(message, field))

    async def _upload(self, request: Request, first: Message) -> AsyncIterator[Message]:
        """The params message (if any field is set), then the body in bytes-field chunks."""
        field = self.binding.body_field()
        if field is None or field.type != FieldDescriptor.TYPE_BYTES:
            raise InvalidArgument("body", "this streaming method takes no HTTP body")
        if first.ByteSize():
            yield first
        pending = bytearray()
        async for piece in request.stream():
            pending += piece
            while len(pending) >= UPLOAD_CHUNK_BYTES:
                yield self._request_class(**{field.name: bytes(pending[:UPLOAD_CHUNK_BYTES])})
                del pending[:UPLOAD_CHUNK_BYTES]
        if pending:
            yield self._request_class(**{field.name: bytes(pending)})


def _merge(body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    merged = dict(body)
    for key, value in params.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _to_json(message: Message, field: FieldDescriptor | None) -> Any:
    if field is None:
        return json_format.MessageToDict(message)
    whole = json_format.MessageToDict(message)
    return whole.get(field.json_name)


async def _bytes_of(
    stream: AsyncGenerator[Message, None], first: Message, field: FieldDescriptor
) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(stream):
        message: Message | None = first
        while message is not None:
            chunk = getattr(message, field.name)
            if chunk:
                yield chunk
            message = await anext(stream, None)


async def _messages(
    stream: AsyncGenerator[Message, None], first: Message, field: FieldDescriptor | None
) -> AsyncIterator[dict[str, Any]]:
    async with contextlib.aclosing(stream):
        message: Message | None = first
        try:
            while message is not None:
                yield {"result": _to_json(message, field)}
                message = await anext(stream, None)
        except Exception as exc:
            error = as_lattice_error(exc)
            yield status_body(error, http_status(error))


async def _lines(
    stream: AsyncGenerator[Message, None], first: Message, field: FieldDescriptor | None
) -> AsyncIterator[bytes]:
    async for item in _messages(stream, first, field):
        yield json.dumps(item, separators=(",", ":")).encode() + b"\n"


async def _events(
    stream: AsyncGenerator[Message, None], first: Message, field: FieldDescriptor | None
) -> AsyncIterator[dict[str, str]]:
    async for item in _messages(stream, first, field):
        yield {"data": json.dumps(item, separators=(",", ":"))}


def rest_routes(
    bindings: list[Binding], servicers: Mapping[str, Any], max_body_bytes: int
) -> list[Route]:
    """One route per binding whose service the gateway serves."""
    routes = []
    for binding in bindings:
        servicer = servicers.get(binding.method.containing_service.full_name)
        if servicer is None:
            continue
        endpoint = _Route(binding, servicer, max_body_bytes)
        routes.append(
            Route(
                binding.route_path,
                endpoint.handle,
                methods=[binding.verb.upper()],
                name=binding.grpc_path,
            )
        )
    return routes
