"""Wires the inference service: settings, servicer, server."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from opentelemetry.sdk.trace import TracerProvider

from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.runtime import LatticeServer, ServerSettings, Service
from services.runtime.entrypoint import run_service


@dataclasses.dataclass(frozen=True)
class InferenceSettings(ServerSettings):
    port: int = 50053


async def build_server(
    settings: InferenceSettings, *, tracer_provider: TracerProvider | None = None
) -> LatticeServer:
    # Until the inference lands, every RPC answers UNIMPLEMENTED.
    servicer = inference_pb2_grpc.InferenceServiceServicer()
    service = Service(
        servicer,
        inference_pb2_grpc.add_InferenceServiceServicer_to_server,
        inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    )
    return LatticeServer([service], settings, tracer_provider=tracer_provider)


def main(argv: Sequence[str] | None = None) -> None:
    run_service("inference", InferenceSettings, build_server, argv)
