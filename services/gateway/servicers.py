"""Thin gRPC servicers: turn each RPC into a `Gateway` call, nothing more.

The registry and trainer servicers are generated from the service
descriptors, so every method of those services is forwarded (a new RPC
needs only a row in `authz.METHOD_SCOPES`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio

from lattice.v1 import inference_pb2_grpc
from services.gateway.gateway import Call, Gateway

_INFERENCE = "/lattice.v1.InferenceService/"


def _call(method: str, context: aio.ServicerContext) -> Call:
    return Call(method, tuple(context.invocation_metadata() or ()))


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def Generate(self, request, context):
        return await self._gateway.invoke(_call(_INFERENCE + "Generate", context), request)

    def GenerateStream(self, request, context) -> AsyncIterator[Any]:
        return self._gateway.invoke_stream(_call(_INFERENCE + "GenerateStream", context), request)

    async def Embed(self, request, context):
        return await self._gateway.invoke(_call(_INFERENCE + "Embed", context), request)

    async def SimilarWords(self, request, context):
        return await self._gateway.invoke(_call(_INFERENCE + "SimilarWords", context), request)

    async def ListLoadedModels(self, request, context):
        call = _call(_INFERENCE + "ListLoadedModels", context)
        return await self._gateway.list_loaded_models(call, request)


def forwarding_servicer(
    base: type, descriptor: ServiceDescriptor, upstream: str, gateway: Gateway
) -> Any:
    """An instance of `base` whose every method forwards to `upstream` via `gateway`."""
    namespace: dict[str, Any] = {}
    for method in descriptor.methods:
        path = f"/{descriptor.full_name}/{method.name}"
        if method.server_streaming:
            namespace[method.name] = _streaming(path, upstream, gateway)
        else:
            namespace[method.name] = _unary(path, upstream, gateway)
    return type(f"Forwarding{descriptor.name}", (base,), namespace)()


def _unary(path: str, upstream: str, gateway: Gateway):
    async def handler(self, request, context):
        return await gateway.forward_unary(upstream, _call(path, context), request)

    return handler


def _streaming(path: str, upstream: str, gateway: Gateway):
    def handler(self, request, context):
        return gateway.forward_stream(upstream, _call(path, context), request)

    return handler
