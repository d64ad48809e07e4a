"""The OpenAPI 3.0 document of `/api/v1`, generated from the same bindings as the routes.

Schemas follow the proto3 JSON mapping (what `json_format` reads and writes):
lowerCamelCase names, 64-bit integers as strings, enums by name, bytes as
base64, Timestamp/Duration as strings. Never hand-edited: an RPC's annotation
is its documentation.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.gateway.http.bindings import Binding, resolve_field

_F = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT64: {"type": "string", "format": "int64"},
    _F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _F.TYPE_SINT64: {"type": "string", "format": "int64"},
    _F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
#: Well-known types with their own JSON form.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "example": "1.5s"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.Any": {"type": "object", "additionalProperties": True},
}

_STATUS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "code": {"type": "integer", "description": "HTTP status"},
        "message": {"type": "string"},
        "status": {"type": "string", "description": "google.rpc.Code name"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}
_ERROR: dict[str, Any] = {"type": "object", "properties": {"error": _STATUS}}


class _Schemas:
    """Collects component schemas for every message reachable from the bindings."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, message: Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        name = message.full_name
        if name not in self.components:
            self.components[name] = {}  # placeholder first: messages may recurse
            self.components[name] = {
                "type": "object",
                "properties": {f.json_name: self.field(f) for f in message.fields},
            }
        return {"$ref": f"#/components/schemas/{name}"}

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(field)
        if field.is_repeated:
            return {"type": "array", "items": single}
        return single

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.ref(field.message_type)
        if field.enum_type is not None:
            return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
        return dict(_SCALARS[field.type])


def _path(binding: Binding) -> str:
    return binding.template


def _parameters(binding: Binding, schemas: _Schemas) -> list[dict[str, Any]]:
    message = binding.method.input_type
    parameters = [
        {
            "name": path,
            "in": "path",
            "required": True,
            "schema": schemas.single(resolve_field(message, path)),
        }
        for path in binding.path_fields.values()
    ]
    if binding.body == "*":
        return parameters
    bound = {p.split(".")[0] for p in binding.path_fields.values()} | {binding.body}
    for field in message.fields:
        if field.name in bound or field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        parameters.append(
            {
                "name": field.json_name,
                "in": "query",
                "required": False,
                "schema": schemas.field(field),
            }
        )
    return parameters


def _request_body(binding: Binding, schemas: _Schemas) -> dict[str, Any] | None:
    if not binding.body:
        return None
    if binding.client_streaming:
        content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        return {"required": True, "content": content}
    field = binding.body_field()
    schema = schemas.ref(binding.method.input_type) if field is None else schemas.field(field)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _response(binding: Binding, schemas: _Schemas) -> dict[str, Any]:
    field = binding.response_field()
    if binding.server_streaming and field is not None and field.type == FieldDescriptor.TYPE_BYTES:
        content = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
        return {"description": "The bytes, streamed.", "content": content}
    schema = schemas.ref(binding.method.output_type) if field is None else schemas.field(field)
    if not binding.server_streaming:
        return {"description": "OK", "content": {"application/json": {"schema": schema}}}
    line = {
        "type": "object",
        "properties": {"result": schema, "error": _STATUS},
    }
    return {
        "description": "A stream: one JSON object per line (or per SSE event with "
        "Accept: text/event-stream); an error after the first ends the stream.",
        "content": {
            "application/x-ndjson": {"schema": line},
            "text/event-stream": {"schema": line},
        },
    }


def openapi_document(bindings: list[Binding], *, version: str) -> dict[str, Any]:
    """The document for `bindings` (OpenAPI 3.0.3)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for binding in sorted(bindings, key=lambda b: (b.template, b.verb)):
        service = binding.method.containing_service
        operation: dict[str, Any] = {
            "operationId": f"{service.name}_{binding.method.name}",
            "tags": [service.name],
            "summary": f"{service.full_name}.{binding.method.name}",
            "parameters": _parameters(binding, schemas),
            "responses": {
                "200": _response(binding, schemas),
                "default": {"$ref": "#/components/responses/Error"},
            },
        }
        body = _request_body(binding, schemas)
        if body is not None:
            operation["requestBody"] = body
        paths.setdefault(_path(binding), {})[binding.verb] = operation
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Lattice REST API",
            "version": version,
            "description": "Every lattice.v1 RPC, transcoded from its google.api.http "
            "annotation. Authenticate with `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "responses": {
                "Error": {
                    "description": "google.rpc.Status as JSON; HTTP status per google.rpc.Code.",
                    "content": {"application/json": {"schema": _ERROR}},
                }
            },
        },
    }
