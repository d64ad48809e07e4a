"""Wires the registry service: settings, servicer, server."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider

from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.runtime import LatticeServer, ServerSettings, Service
from services.runtime.entrypoint import run_service


@dataclasses.dataclass(frozen=True)
class RegistrySettings(ServerSettings):
    port: int = 50052


async def build_server(
    settings: RegistrySettings, *, tracer_provider: TracerProvider | None = None
) -> LatticeServer:
    # Until the registry lands, every RPC answers UNIMPLEMENTED.
    servicer = registry_pb2_grpc.ModelRegistryServiceServicer()
    service = Service(
        servicer,
        registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
        registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"],
    )
    return LatticeServer([service], settings, tracer_provider=tracer_provider)


def main(argv: Sequence[str] | None = None) -> None:
    run_service("registry", RegistrySettings, build_server, argv)
