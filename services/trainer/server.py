"""Wires the trainer service: settings, servicer, server."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider

from lattice.v1 import trainer_pb2, trainer_pb2_grpc
from services.runtime import LatticeServer, ServerSettings, Service
from services.runtime.entrypoint import run_service


@dataclasses.dataclass(frozen=True)
class TrainerSettings(ServerSettings):
    port: int = 50054


async def build_server(
    settings: TrainerSettings, *, tracer_provider: TracerProvider | None = None
) -> LatticeServer:
    # Until the trainer lands, every RPC answers UNIMPLEMENTED.
    servicer = trainer_pb2_grpc.TrainerServiceServicer()
    service = Service(
        servicer,
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
        trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
    )
    return LatticeServer([service], settings, tracer_provider=tracer_provider)


def main(argv: Sequence[str] | None = None) -> None:
    run_service("trainer", TrainerSettings, build_server, argv)
