"""An InferenceService that answers at once, without a model.

It speaks the real contract on the shared runtime, so it measures the hops in
front of inference (the gateway's own cost, as a cached response would) and is
a predictable peer for gateway tests: it records what it was sent and whether
a stream was cancelled.
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc import aio

from lattice.errors import PermissionDenied, Unavailable
from lattice.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from services.runtime import LatticeServer, ServerSettings, Service


class EchoInference(inference_pb2_grpc.InferenceServiceServicer):
    """A real, deterministic InferenceService for gateway tests."""

    def __init__(
        self,
        name: str,
        *,
        stream_delay: float = 0.0,
        unavailable_versions: tuple[int, ...] = (),
        loaded: tuple[tuple[str, int], ...] = (),
    ) -> None:
        self.name = name
        self.stream_delay = stream_delay
        #: Versions this replica answers UNAVAILABLE for (a version that cannot serve).
        self.unavailable_versions = unavailable_versions
        #: (model, version) pairs ListLoadedModels reports READY.
        self.loaded = loaded
        #: Answer ListLoadedModels with PERMISSION_DENIED (a replica that is alive).
        self.refuse_polls = False
        self.requests: list[Any] = []
        self.metadata: list[dict[str, str]] = []
        self.remaining: list[float | None] = []
        self.stream_sent = 0
        self.stream_cancelled = asyncio.Event()

    def _record(self, request: Any, context: aio.ServicerContext) -> tuple[str, int]:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata() or ()))
        self.remaining.append(context.time_remaining())
        name, _, version = request.model.partition(":")
        return name, int(version or 0)

    async def Generate(self, request, context):
        name, version = self._record(request, context)
        if version in self.unavailable_versions:
            raise Unavailable(f"version {version} is not loaded here")
        completion = max(1, len(request.prompt.split()))
        return inference_pb2.GenerateResponse(
            text=f"{self.name}:{request.prompt}",
            model_name=name,
            model_version=version,
            finish_reason=inference_pb2.FINISH_REASON_LENGTH,
            usage=common_pb2.Usage(
                prompt_tokens=completion, completion_tokens=completion, total_tokens=2 * completion
            ),
        )

    async def GenerateStream(self, request, context):
        name, version = self._record(request, context)
        count = request.parameters.max_new_tokens or 4
        try:
            for index in range(count):
                first = index == 0
                yield inference_pb2.GenerateStreamResponse(
                    delta=f"t{index} ",
                    index=index,
                    model_name=name if first else "",
                    model_version=version if first else 0,
                    prompt_tokens=2 if first else 0,
                )
                self.stream_sent += 1
                if self.stream_delay:
                    await asyncio.sleep(self.stream_delay)
        except asyncio.CancelledError:
            self.stream_cancelled.set()
            raise
        yield inference_pb2.GenerateStreamResponse(
            index=count,
            finish_reason=inference_pb2.FINISH_REASON_LENGTH,
            usage=common_pb2.Usage(
                prompt_tokens=2, completion_tokens=count, total_tokens=count + 2
            ),
        )

    async def Embed(self, request, context):
        name, version = self._record(request, context)
        return inference_pb2.EmbedResponse(
            embeddings=[inference_pb2.Embedding(values=[float(len(t))]) for t in request.inputs],
            model_name=name,
            model_version=version,
            usage=common_pb2.Usage(
                prompt_tokens=len(request.inputs), total_tokens=len(request.inputs)
            ),
        )

    async def ListLoadedModels(self, request, context):
        if self.refuse_polls:
            raise PermissionDenied("not for this caller")
        ready = inference_pb2.LOADED_MODEL_STATE_READY
        models = [
            inference_pb2.LoadedModel(model_name=name, version=version, state=ready)
            for name, version in self.loaded
        ]
        return inference_pb2.ListLoadedModelsResponse(models=models, registry_revision=7)


async def start_echo(
    name: str, *, port: int = 0, **kwargs: Any
) -> tuple[LatticeServer, EchoInference]:
    servicer = EchoInference(name, **kwargs)
    server = LatticeServer(
        [
            Service(
                servicer,
                inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
            )
        ],
        ServerSettings(port=port, log_json=False, grace_seconds=0.1),
    )
    await server.start()
    return server, servicer
