"""Thin gRPC servicers: turn each RPC into a `Gateway` call, nothing more.

They are mounted with `raw_requests`: each request arrives as its bytes and
goes to the `Gateway` still `Encoded`, so the caller is authenticated before
anything it sent is parsed, and bytes that do not parse (or are too large)
are refused only then, with INVALID_ARGUMENT.

The registry and trainer servicers are generated from the service
descriptors, so every method of those services is forwarded (a new RPC
needs only a row in `authz.METHOD_SCOPES`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.gateway.gateway import Call, Gateway
from services.runtime.decoding import Encoded

_INFERENCE = "/lattice.v1.InferenceService/"


def _call(method: str, context: aio.ServicerContext) -> Call:
    return Call(method, tuple(context.invocation_metadata() or ()))


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def Generate(self, request, context):
        encoded = _encoded(request, inference_pb2.GenerateRequest)
        return await self._gateway.invoke(_call(_INFERENCE + "Generate", context), encoded)

    def GenerateStream(self, request, context) -> AsyncIterator[Any]:
        encoded = _encoded(request, inference_pb2.GenerateStreamRequest)
        return self._gateway.invoke_stream(_call(_INFERENCE + "GenerateStream", context), encoded)

    async def Embed(self, request, context):
        encoded = _encoded(request, inference_pb2.EmbedRequest)
        return await self._gateway.invoke(_call(_INFERENCE + "Embed", context), encoded)

    async def Classify(self, request, context):
        encoded = _encoded(request, inference_pb2.ClassifyRequest)
        return await self._gateway.invoke(_call(_INFERENCE + "Classify", context), encoded)

    async def SimilarWords(self, request, context):
        encoded = _encoded(request, inference_pb2.SimilarWordsRequest)
        return await self._gateway.invoke(_call(_INFERENCE + "SimilarWords", context), encoded)

    async def ListLoadedModels(self, request, context):
        call = _call(_INFERENCE + "ListLoadedModels", context)
        encoded = _encoded(request, inference_pb2.ListLoadedModelsRequest)
        return await self._gateway.list_loaded_models(call, encoded)


def forwarding_servicer(
    base: type, descriptor: ServiceDescriptor, upstream: str, gateway: Gateway
) -> Any:
    """An instance of `base` whose every method forwards to `upstream` via `gateway`."""
    namespace: dict[str, Any] = {}
    for method in descriptor.methods:
        path = f"/{descriptor.full_name}/{method.name}"
        message_type = message_factory.GetMessageClass(method.input_type)
        if method.client_streaming:
            namespace[method.name] = _uploading(path, upstream, gateway, message_type)
        elif method.server_streaming:
            namespace[method.name] = _streaming(path, upstream, gateway, message_type)
        else:
            namespace[method.name] = _unary(path, upstream, gateway, message_type)
    return type(f"Forwarding{descriptor.name}", (base,), namespace)()


def _encoded(request: Any, message_type: type) -> Any:
    """The gRPC front hands these handlers raw bytes (parsed only after authentication);
    the HTTP front hands them messages it already built from JSON."""
    return Encoded(request, message_type) if isinstance(request, bytes) else request


def _unary(path: str, upstream: str, gateway: Gateway, message_type: type):
    async def handler(self, request, context):
        encoded = _encoded(request, message_type)
        return await gateway.forward_unary(upstream, _call(path, context), encoded)

    return handler


def _streaming(path: str, upstream: str, gateway: Gateway, message_type: type):
    def handler(self, request, context):
        encoded = _encoded(request, message_type)
        return gateway.forward_stream(upstream, _call(path, context), encoded)

    return handler


def _uploading(path: str, upstream: str, gateway: Gateway, message_type: type):
    async def handler(self, request_iterator, context):
        encoded = (_encoded(raw, message_type) async for raw in request_iterator)
        return await gateway.forward_client_stream(upstream, _call(path, context), encoded)

    return handler
