"""Wires the gateway: it serves the same lattice.v1 services it fronts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider

from lattice.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.runtime import LatticeServer, ServerSettings, Service
from services.runtime.entrypoint import run_service


@dataclasses.dataclass(frozen=True)
class GatewaySettings(ServerSettings):
    port: int = 50051
    registry_address: str = "127.0.0.1:50052"
    inference_addresses: tuple[str, ...] = ("127.0.0.1:50053",)
    trainer_address: str = "127.0.0.1:50054"


async def build_server(
    settings: GatewaySettings, *, tracer_provider: TracerProvider | None = None
) -> LatticeServer:
    # Until the gateway lands, every RPC answers UNIMPLEMENTED.
    services = [
        Service(
            inference_pb2_grpc.InferenceServiceServicer(),
            inference_pb2_grpc.add_InferenceServiceServicer_to_server,
            inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
        ),
        Service(
            registry_pb2_grpc.ModelRegistryServiceServicer(),
            registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
            registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"],
        ),
        Service(
            trainer_pb2_grpc.TrainerServiceServicer(),
            trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
            trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
        ),
    ]
    return LatticeServer(services, settings, tracer_provider=tracer_provider)


def main(argv: Sequence[str] | None = None) -> None:
    run_service("gateway", GatewaySettings, build_server, argv)
