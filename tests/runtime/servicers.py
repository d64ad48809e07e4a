"""Small real servicers for testing the runtime itself (not any service's logic)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence

from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from lattice.errors import InvalidArgument, NotFound
from lattice.v1 import inference_pb2, inference_pb2_grpc
from services.runtime import LatticeServer, ServerSettings, Service, create_channel
from services.runtime.context import REQUEST_ID_KEY, request_id_var
from services.runtime.entrypoint import run_service


class ProbeInference(inference_pb2_grpc.InferenceServiceServicer):
    """Behaves by prompt, so one servicer exercises every runtime path.

    - "sleep:<seconds>" sleeps, then answers
    - "block:<seconds>" blocks the event loop that long (a hung process)
    - "invalid" raises InvalidArgument; "missing" raises NotFound; "crash" raises ValueError
    - "call:<address>" calls Health.Check on another server through create_channel
    - anything else is echoed
    GenerateStream yields one delta per 0.1 s, `max_new_tokens` of them.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.seen_request_ids: list[str] = []
        self._tracer_provider = tracer_provider

    async def Generate(self, request, context):
        self.seen_request_ids.append(request_id_var.get())
        prompt = request.prompt
        if prompt.startswith("sleep:"):
            await asyncio.sleep(float(prompt.split(":", 1)[1]))
        elif prompt.startswith("block:"):
            time.sleep(float(prompt.split(":", 1)[1]))  # noqa: ASYNC251 - on purpose
        elif prompt == "invalid":
            raise InvalidArgument("prompt", "must not be 'invalid'")
        elif prompt == "missing":
            raise NotFound("model 'missing' is not registered")
        elif prompt == "crash":
            raise ValueError("secret internal detail")
        elif prompt.startswith("call:"):
            async with create_channel(
                prompt.split(":", 1)[1], tracer_provider=self._tracer_provider
            ) as ch:
                await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        return inference_pb2.GenerateResponse(text=prompt, model_name="probe")

    async def GenerateStream(self, request, context) -> AsyncIterator:
        for index in range(request.parameters.max_new_tokens or 5):
            await asyncio.sleep(0.1)
            yield inference_pb2.GenerateStreamResponse(delta=f"t{index} ", index=index)


class HeaderEcho(inference_pb2_grpc.InferenceServiceServicer):
    """Answers with the request id and the time left, to check propagation."""

    async def Generate(self, request, context):
        metadata = dict(context.invocation_metadata())
        remaining = context.time_remaining()
        return inference_pb2.GenerateResponse(
            text=f"{metadata.get(REQUEST_ID_KEY, '')}|{remaining if remaining else -1}"
        )


def inference_service(servicer: inference_pb2_grpc.InferenceServiceServicer) -> Service:
    return Service(
        servicer,
        inference_pb2_grpc.add_InferenceServiceServicer_to_server,
        inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    )


@dataclasses.dataclass(frozen=True)
class ProbeSettings(ServerSettings):
    grace_seconds: float = 5.0


async def _build(settings: ProbeSettings) -> LatticeServer:
    return LatticeServer([inference_service(ProbeInference())], settings)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the probe server as a real process (for signal and drain tests)."""
    run_service("probe", ProbeSettings, _build, argv)


if __name__ == "__main__":
    main()
