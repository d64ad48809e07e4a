"""gRPC servicer for lattice.v1.InferenceService: converts, nothing else.

Errors are `lattice.errors` exceptions raised by the engine; the shared
wrapper (`services.runtime.rpc_wrapper`) maps them to status codes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from google.protobuf import timestamp_pb2

from lattice.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from services.inference.backends import EmbeddingResult, FinishReason, GenerationResult
from services.inference.chat import ChatTurn
from services.inference.engine import InferenceEngine, StreamPart
from services.inference.manager import ModelManager
from services.inference.requests import ClassifyCall, EmbedCall, GenerateCall
from services.inference.serving import VersionState
from services.inference.similar import SimilarWordsCall
from services.runtime.identity import caller_of
from services.runtime.registry_view import RegistryView

_FINISH = {
    None: inference_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.LENGTH: inference_pb2.FINISH_REASON_LENGTH,
    FinishReason.EOS: inference_pb2.FINISH_REASON_EOS,
    FinishReason.STOP_SEQUENCE: inference_pb2.FINISH_REASON_STOP_SEQUENCE,
    FinishReason.CANCELLED: inference_pb2.FINISH_REASON_CANCELLED,
}
_STATE = {
    VersionState.LOADING: inference_pb2.LOADED_MODEL_STATE_LOADING,
    VersionState.READY: inference_pb2.LOADED_MODEL_STATE_READY,
    VersionState.DRAINING: inference_pb2.LOADED_MODEL_STATE_DRAINING,
    VersionState.FAILED: inference_pb2.LOADED_MODEL_STATE_FAILED,
}


def _usage(prompt: int, completion: int) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


def _embeddings(result: EmbeddingResult) -> list[inference_pb2.Embedding]:
    if not result.unknown_words:
        return [inference_pb2.Embedding(values=v) for v in result.vectors]
    return [
        inference_pb2.Embedding(
            values=values, unknown_words=unknown, all_unknown=len(unknown) == count
        )
        for values, unknown, count in zip(
            result.vectors, result.unknown_words, result.token_counts, strict=True
        )
    ]


def generate_call(
    request: inference_pb2.GenerateRequest | inference_pb2.GenerateStreamRequest,
    tenant: str = "",
) -> GenerateCall:
    p = request.parameters
    return GenerateCall(
        model=request.model,
        prompt=request.prompt,
        max_new_tokens=p.max_new_tokens,
        temperature=p.temperature if p.HasField("temperature") else None,
        top_p=p.top_p if p.HasField("top_p") else None,
        top_k=p.top_k,
        stop=tuple(p.stop),
        seed=p.seed if p.HasField("seed") else None,
        skip_cache=request.skip_cache,
        routing_key=request.routing_key,
        tenant=tenant,
        messages=tuple(ChatTurn(m.role, m.content, m.name) for m in request.messages),
    )


def _stream_message(part: StreamPart) -> inference_pb2.GenerateStreamResponse:
    chunk = part.chunk
    message = inference_pb2.GenerateStreamResponse(
        delta=chunk.delta, index=part.index, cached=part.cached
    )
    if part.index == 0:
        message.model_name = part.model_name
        message.model_version = part.version
    if chunk.last:
        message.finish_reason = _FINISH[chunk.finish_reason]
        message.usage.CopyFrom(_usage(chunk.prompt_tokens, chunk.completion_tokens))
    return message


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, engine: InferenceEngine, manager: ModelManager, view: RegistryView) -> None:
        self.engine = engine
        self.manager = manager
        self._view = view

    async def Generate(self, request, context) -> inference_pb2.GenerateResponse:
        outcome = await self.engine.generate(generate_call(request, caller_of(context).tenant))
        result: GenerationResult = outcome.result
        return inference_pb2.GenerateResponse(
            text=result.text,
            model_name=outcome.model_name,
            model_version=outcome.version,
            finish_reason=_FINISH[result.finish_reason],
            usage=_usage(result.prompt_tokens, result.completion_tokens),
            cached=outcome.cached,
        )

    async def GenerateStream(
        self, request, context
    ) -> AsyncIterator[inference_pb2.GenerateStreamResponse]:
        call = generate_call(request, caller_of(context).tenant)
        async with contextlib.aclosing(self.engine.stream(call)) as parts:
            async for part in parts:
                message = _stream_message(part)
                if part.index == 0:  # lets the gateway charge a stream cut short
                    message.prompt_tokens = self.manager.count_prompt_tokens(
                        part.model_name,
                        part.version,
                        call.prompt,  # rendered, for a chat
                    )
                yield message

    async def Embed(self, request, context) -> inference_pb2.EmbedResponse:
        call = EmbedCall(
            model=request.model,
            inputs=tuple(request.inputs),
            normalize=request.normalize,
            skip_cache=request.skip_cache,
            routing_key=request.routing_key,
            tenant=caller_of(context).tenant,
        )
        outcome = await self.engine.embed(call)
        return inference_pb2.EmbedResponse(
            embeddings=_embeddings(outcome.result),
            model_name=outcome.model_name,
            model_version=outcome.version,
            usage=_usage(outcome.result.prompt_tokens, 0),
            cached=outcome.cached,
        )

    async def Classify(self, request, context) -> inference_pb2.ClassifyResponse:
        call = ClassifyCall(
            model=request.model,
            inputs=tuple(request.inputs),
            top_k=request.top_k,
            skip_cache=request.skip_cache,
            routing_key=request.routing_key,
            tenant=caller_of(context).tenant,
        )
        outcome = await self.engine.classify(call)
        return inference_pb2.ClassifyResponse(
            classifications=[
                inference_pb2.Classification(
                    labels=[inference_pb2.LabelScore(label=k, score=v) for k, v in ranked]
                )
                for ranked in outcome.ranked()
            ],
            model_name=outcome.model_name,
            model_version=outcome.version,
            usage=_usage(outcome.result.prompt_tokens, 0),
            cached=outcome.cached,
        )

    async def SimilarWords(self, request, context) -> inference_pb2.SimilarWordsResponse:
        query = request.WhichOneof("query")
        call = SimilarWordsCall(
            model=request.model,
            word=request.word if query == "word" else None,
            vector=tuple(request.vector.values) if query == "vector" else None,
            top_k=request.top_k,
            routing_key=request.routing_key,
        )
        outcome = await self.engine.similar_words(call)
        return inference_pb2.SimilarWordsResponse(
            words=[inference_pb2.SimilarWord(word=w, similarity=s) for w, s in outcome.words],
            model_name=outcome.model_name,
            model_version=outcome.version,
            usage=_usage(1, 0),
        )

    async def ListLoadedModels(self, request, context) -> inference_pb2.ListLoadedModelsResponse:
        models = []
        for entry in self.manager.versions():
            loaded = inference_pb2.LoadedModel(
                model_name=entry.name,
                version=entry.version,
                artifact_digest=entry.digest,
                backend=entry.backend_kind,
                state=_STATE[entry.state],
                in_flight=entry.in_flight,
                error=entry.error,
                weight=self.manager.weight_of(entry),
            )
            if entry.load_time is not None:
                stamp = timestamp_pb2.Timestamp()
                stamp.FromNanoseconds(int(entry.load_time * 1e9))
                loaded.load_time.CopyFrom(stamp)
            models.append(loaded)
        return inference_pb2.ListLoadedModelsResponse(
            models=models, registry_revision=self._view.revision
        )
