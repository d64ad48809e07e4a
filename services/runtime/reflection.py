"""Server reflection under both names clients ask for: `grpc.reflection.v1`
(current grpcurl, Postman, Evans) and `grpc.reflection.v1alpha` (older tools).

grpcio-reflection ships only v1alpha. v1 is the same protocol: the same
messages, field for field, in another package. So the v1 service is the
v1alpha servicer registered under the v1 name with the v1alpha message
classes (the bytes on the wire are identical), and a v1 copy of
reflection.proto's descriptor joins the default pool, so that the v1
service can itself be listed and described.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_FILE = "grpc/reflection/v1/reflection.proto"
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1ALPHA_SERVICE = reflection.SERVICE_NAME
SERVICE_NAMES = (V1_SERVICE, V1ALPHA_SERVICE)


def _renamed(type_name: str) -> str:
    old = f".{reflection_pb2.DESCRIPTOR.package}."
    return f".{V1_PACKAGE}." + type_name[len(old) :] if type_name.startswith(old) else type_name


def register_v1_descriptor(pool: descriptor_pool.DescriptorPool | None = None) -> None:
    """Add grpc/reflection/v1/reflection.proto to `pool` (the default one), once."""
    pool = pool or descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = V1_PACKAGE
    for message in proto.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = _renamed(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = _renamed(method.input_type)
            method.output_type = _renamed(method.output_type)
    pool.Add(proto)


def add_v1_to_server(servicer: Any, server: Any) -> None:
    """`add_ServerReflectionServicer_to_server`, under the v1 service name."""
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, handlers),))
    server.add_registered_method_handlers(V1_SERVICE, handlers)


def reflection_servicer(service_names: Sequence[str]) -> Any:
    """One servicer for both versions, listing `service_names` and reflection itself."""
    register_v1_descriptor()
    return reflection.aio.ReflectionServicer([*service_names, *SERVICE_NAMES])


#: (add_to_server, for `mount`) for each served version.
ADD_TO_SERVER = (add_v1_to_server, reflection_pb2_grpc.add_ServerReflectionServicer_to_server)
