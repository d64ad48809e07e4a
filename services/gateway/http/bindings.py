"""HTTP bindings read from the protos' `google.api.http` annotations.

Nothing here is written per RPC: every method of the given services that
carries an annotation becomes a `Binding` (verb, path template, which fields
come from the path, the body, and the response body), and both the REST
routes (`transcode`) and the OpenAPI document (`openapi`) are built from the
same list, so the HTTP surface cannot drift from the contract.

Path templates: literal segments, `{field}` / `{nested.field}` (one segment),
`{field=**}` (the rest of the path) and a trailing `:verb`, as in
google/api/http.proto.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from google.api import annotations_pb2, http_pb2  # type: ignore[import-untyped]
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

_VARIABLE = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_.]*)(?:=([^}]*))?\}")
_VERBS = ("get", "put", "post", "delete", "patch")


@dataclasses.dataclass(frozen=True)
class Binding:
    """One HTTP route of one RPC."""

    method: MethodDescriptor
    verb: str
    #: The annotation's template, e.g. "/api/v1/models/{model}:generate".
    template: str
    #: "" (no body), "*" (the whole request) or a field name.
    body: str
    #: "" (the whole response) or a field name.
    response_body: str
    #: Starlette path parameter name -> request field path ("header.digest").
    path_fields: dict[str, str]
    #: The template with Starlette parameter names ("{p0}", "{p1:path}").
    route_path: str

    @property
    def grpc_path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def client_streaming(self) -> bool:
        return self.method.client_streaming

    @property
    def server_streaming(self) -> bool:
        return self.method.server_streaming

    def body_field(self) -> FieldDescriptor | None:
        if self.body in ("", "*"):
            return None
        return self.method.input_type.fields_by_name[self.body]

    def response_field(self) -> FieldDescriptor | None:
        if not self.response_body:
            return None
        return self.method.output_type.fields_by_name[self.response_body]

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Sort key: `:verb` routes, then more literal segments, then longer, first."""
        verb = 1 if re.search(r":[a-zA-Z]+$", self.template) else 0
        literals = sum(1 for s in self.template.split("/") if s and "{" not in s)
        return (-verb, -literals, -len(self.template))


def resolve_field(message: Descriptor, path: str) -> FieldDescriptor:
    """The field at a dotted path ("header.digest"), or KeyError."""
    *parents, last = path.split(".")
    current: Descriptor | None = message
    for name in parents:
        if current is None:
            raise KeyError(path)
        current = current.fields_by_name[name].message_type
    if current is None:
        raise KeyError(path)
    return current.fields_by_name[last]


def _compile(method: MethodDescriptor, template: str) -> tuple[str, dict[str, str]]:
    fields: dict[str, str] = {}

    def variable(match: re.Match[str]) -> str:
        field, pattern = match.group(1), match.group(2) or "*"
        resolve_field(method.input_type, field)  # a typo in the proto fails at start-up
        name = f"p{len(fields)}"
        fields[name] = field
        return f"{{{name}:path}}" if pattern == "**" else f"{{{name}}}"

    return _VARIABLE.sub(variable, template), fields


def _rules(rule: http_pb2.HttpRule) -> Iterable[http_pb2.HttpRule]:
    yield rule
    yield from rule.additional_bindings


def bindings_of(methods: Iterable[MethodDescriptor]) -> list[Binding]:
    """Every annotated binding of `methods`, most specific route first."""
    found = []
    for method in methods:
        options = method.GetOptions()
        if not options.HasExtension(annotations_pb2.http):
            continue
        for rule in _rules(options.Extensions[annotations_pb2.http]):
            pattern = rule.WhichOneof("pattern")
            if pattern not in _VERBS:
                continue
            template = getattr(rule, pattern)
            route_path, fields = _compile(method, template)
            found.append(
                Binding(
                    method=method,
                    verb=pattern,
                    template=template,
                    body=rule.body,
                    response_body=rule.response_body,
                    path_fields=fields,
                    route_path=route_path,
                )
            )
    return sorted(found, key=lambda b: b.specificity)
