"""The inference data plane, free of gRPC: validate -> route -> policy ->
cache / single-flight -> batcher or backend -> result.

Order matters: validation and policy come before the cache, so a cached
answer never bypasses a limit; the version is leased before anything awaits,
so a draining version finishes exactly the requests it accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from lattice.errors import FailedPrecondition, InvalidArgument
from lattice.refs import ModelRef, parse_model_ref
from services.inference.backends import (
    Backend,
    ClassificationResult,
    EmbeddingResult,
    FinishReason,
    GenerationParams,
    GenerationResult,
    StreamChunk,
    Task,
    request_tenant,
    require_task,
)
from services.inference.batcher import Batcher
from services.inference.cache import CacheSlot, ResponseCache, SingleFlight, tenant_identity
from services.inference.codec import (
    decode_classification,
    decode_embedding,
    decode_generation,
    encode_classification,
    encode_embedding,
    encode_generation,
)
from services.inference.manager import ModelManager
from services.inference.metrics import InferenceMetrics
from services.inference.requests import (
    ClassifyCall,
    EmbedCall,
    GenerateCall,
    Limits,
    canonical_classification,
    canonical_embedding,
    canonical_generation,
    validate_classify,
    validate_embed,
    validate_generate,
)
from services.inference.serving import ClassifyItem, EmbedItem, ServingVersion
from services.inference.similar import SimilarWordsCall, SimilarWordsOutcome, validate_similar
from services.inference.spans import current_span
from services.inference.word_vectors import WordVectorBackend
from services.runtime.context import remaining_time
from services.runtime.registry_view import RegistryView

log = logging.getLogger(__name__)

_REFS_KEPT = 1024
#: Bytes counted for a local cache entry besides its texts and encoded answer.
_SLOT_OVERHEAD = 200
GENERATE_OP = "text_completion"
EMBED_OP = "embeddings"
CLASSIFY_OP = "classifications"
SIMILAR_OP = "similar_words"


@dataclasses.dataclass(slots=True)
class GenerateOutcome:
    model_name: str
    version: int
    result: GenerationResult
    cached: bool


@dataclasses.dataclass(frozen=True, slots=True)
class StreamPart:
    """One streamed message: the chunk plus who served it."""

    index: int
    chunk: StreamChunk
    model_name: str
    version: int
    cached: bool


@dataclasses.dataclass(slots=True)
class EmbedOutcome:
    model_name: str
    version: int
    result: EmbeddingResult
    cached: bool


def _render_chat(call: GenerateCall, backend: Backend) -> None:
    """A conversation becomes the prompt of the version routing picked (its own
    chat template); from here on it is an ordinary prompt: policy limits, cache
    key and the servicer's token count all see the rendered text."""
    if call.messages:
        call.prompt = backend.render_chat(call.messages)


@dataclasses.dataclass(frozen=True, slots=True)
class ClassifyOutcome:
    model_name: str
    version: int
    result: ClassificationResult
    cached: bool
    top_k: int = 0

    def ranked(self) -> list[list[tuple[str, float]]]:
        """Per input, (label, score) highest first, cut to top_k (0 = all)."""
        labels, keep = self.result.labels, self.top_k or len(self.result.labels)
        return [
            sorted(zip(labels, scores, strict=True), key=lambda pair: -pair[1])[:keep]
            for scores in self.result.scores
        ]


_C = TypeVar("_C", EmbedCall, ClassifyCall)
_R = TypeVar("_R", EmbeddingResult, ClassificationResult)


@dataclasses.dataclass(frozen=True, slots=True)
class _TextsKind(Generic[_C, _R]):
    """What differs between Embed and Classify, which share one path (texts in,
    one answer per text): names, the version's batcher, the backend call, and
    what besides the texts changes the answer (part of the cache key)."""

    name: str
    operation: str
    task: Task
    batcher: Callable[[ServingVersion], Batcher[Any, _R] | None]
    item: Callable[[_C], Any]
    direct: Callable[[Backend, _C], Awaitable[_R]]
    options: Callable[[_C], tuple[Any, ...]]
    canonical: Callable[[_C], Mapping[str, Any]]
    encode: Callable[[_R], bytes]
    decode: Callable[[bytes], _R]


_EMBED: _TextsKind[EmbedCall, EmbeddingResult] = _TextsKind(
    name="embed",
    operation=EMBED_OP,
    task=Task.EMBED,
    batcher=lambda entry: entry.embed_batcher,
    item=lambda call: EmbedItem(call.inputs, call.normalize),
    direct=lambda backend, call: backend.embed(call.inputs, normalize=call.normalize),
    options=lambda call: (call.normalize,),
    canonical=lambda call: canonical_embedding(call.inputs, call.normalize),
    encode=encode_embedding,
    decode=decode_embedding,
)
_CLASSIFY: _TextsKind[ClassifyCall, ClassificationResult] = _TextsKind(
    name="classify",
    operation=CLASSIFY_OP,
    task=Task.CLASSIFY,
    batcher=lambda entry: entry.classify_batcher,
    item=lambda call: ClassifyItem(call.inputs),
    direct=lambda backend, call: backend.classify(call.inputs),
    options=lambda call: (),
    canonical=lambda call: canonical_classification(call.inputs),
    encode=encode_classification,
    decode=decode_classification,
)


def _replay(entry: ServingVersion, result: GenerationResult) -> list[StreamPart]:
    """A cached answer as a stream: all its text, then the closing message."""
    last = StreamChunk(
        "",
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )
    return [
        StreamPart(0, StreamChunk(result.text), entry.name, entry.version, True),
        StreamPart(1, last, entry.name, entry.version, True),
    ]


class _StreamRecorder:
    """Collects a live stream's text and timing for the cache and metrics."""

    def __init__(self, started: float) -> None:
        self._started = started
        self._parts: list[str] = []
        self._final: StreamChunk | None = None
        self._first_at: float | None = None
        self.index = -1

    def add(self, chunk: StreamChunk) -> bool:
        """Record a chunk; True when it is the first one carrying a token."""
        self.index += 1
        self._parts.append(chunk.delta)
        if chunk.last:
            self._final = chunk
        if self._first_at is None and (chunk.delta or chunk.last):
            self._first_at = time.perf_counter()
            return True
        return False

    @property
    def ttft(self) -> float:
        return (self._first_at or self._started) - self._started

    def since_first_token(self) -> float:
        return time.perf_counter() - (self._first_at or self._started)

    def result(self) -> GenerationResult | None:
        final = self._final
        if final is None or final.finish_reason is None:
            return None
        return GenerationResult(
            "".join(self._parts), final.prompt_tokens, final.completion_tokens, final.finish_reason
        )


class _Observed:
    """Times a request into the request-duration histogram, labelled with the
    error type (a class, not a generator: this runs on every request)."""

    __slots__ = ("_metrics", "_model", "_operation", "_start")

    def __init__(self, metrics: InferenceMetrics | None, operation: str, model: str) -> None:
        self._metrics = metrics
        self._operation = operation
        self._model = model

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._metrics is None:
            return
        if exc_type is None:
            error = ""
        elif exc_type is GeneratorExit or issubclass(exc_type, asyncio.CancelledError):
            error = "cancelled"  # the client went away or the deadline passed
        else:
            error = exc_type.__name__
        self._metrics.duration_of(self._operation, self._model, error).observe(
            time.perf_counter() - self._start
        )


class InferenceEngine:
    """Serves Generate, GenerateStream and Embed against the model manager."""

    def __init__(
        self,
        manager: ModelManager,
        view: RegistryView,
        *,
        limits: Limits,
        cache: ResponseCache | None = None,
        metrics: InferenceMetrics | None = None,
        tracer_provider: TracerProvider | None = None,
        load_wait: float = 30.0,
    ) -> None:
        self._manager = manager
        self._view = view
        self._limits = limits
        self._cache = cache
        self._metrics = metrics
        self._flights = SingleFlight(metrics)
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._load_wait = load_wait
        self._refs: dict[str, ModelRef] = {}

    # -- routing and policy ---------------------------------------------------

    def _parse_ref(self, text: str) -> ModelRef:
        """`parse_model_ref`, remembered: clients name the same few models."""
        ref = self._refs.get(text)
        if ref is None:
            ref = parse_model_ref(text)  # raises for a bad reference: nothing kept
            if len(self._refs) >= _REFS_KEPT:
                self._refs.clear()
            self._refs[text] = ref
        return ref

    async def _pick(self, ref: ModelRef, routing_key: str, task: Task) -> ServingVersion:
        entry = self._manager.pick_now(ref, routing_key)
        if entry is None:  # still loading: wait for it, within the deadline
            wait = self._load_wait
            left = remaining_time()
            if left is not None:
                wait = max(0.0, min(wait, left))
            entry = await self._manager.pick(ref, routing_key, timeout=wait)
        if entry.task is not task:
            require_task(entry.name, entry.task, task)
        return entry

    def _policy_limits(self, entry: ServingVersion) -> tuple[int, int]:
        """(max_new_tokens, max_prompt_tokens) for the model; 0 = no ceiling."""
        policy = self._view.policy(entry.name)
        max_new = policy.max_new_tokens if policy is not None else 0
        max_prompt = policy.max_prompt_tokens if policy is not None else 0
        return max_new, max_prompt or (entry.info.context_length or 0)

    def _check_prompt(
        self, entry: ServingVersion, backend: Backend, field: str, text: str, limit: int
    ) -> int | None:
        if not limit:
            return None
        count = backend.count_tokens(text)
        if count is not None and count > limit:
            raise InvalidArgument(
                field,
                f"{count} tokens exceeds the limit max_prompt_tokens={limit} "
                f"of model {entry.name!r}",
            )
        return count

    def _generation_params(
        self, call: GenerateCall, entry: ServingVersion, backend: Backend, params: GenerationParams
    ) -> GenerationParams:
        max_new, max_prompt = self._policy_limits(entry)
        if max_new and params.max_new_tokens > max_new:
            if call.max_new_tokens:
                raise InvalidArgument(
                    "parameters.max_new_tokens",
                    f"{call.max_new_tokens} exceeds the limit max_new_tokens={max_new} "
                    f"of model {entry.name!r}",
                )
            params = dataclasses.replace(params, max_new_tokens=max_new)  # default too high
        self._check_prompt(entry, backend, "prompt", call.prompt, max_prompt)
        return params

    # -- cache ----------------------------------------------------------------

    @staticmethod
    def _generation_slot(
        entry: ServingVersion, tenant: str, prompt: str, params: GenerationParams
    ) -> CacheSlot:
        return CacheSlot(
            tenant_identity(tenant, entry.cache_identity),
            ("generate", prompt, params),
            len(prompt) + _SLOT_OVERHEAD,
            lambda: canonical_generation(prompt, params),
        )

    async def _through_cache(
        self,
        slot: CacheSlot,
        compute: Callable[[], Awaitable[Any]],
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
    ) -> tuple[Any, bool]:
        """(result, cached): the cache first; on a miss, one computation shared
        by every identical request in flight (single-flight)."""
        cache = self._cache
        if cache is not None:
            # The hot path: a local hit needs no await and no digest, a Redis hit no task.
            hit = cache.get_local(slot)
            if hit is None:
                hit = await cache.get_remote(slot, decode)
            if hit is not None:
                return hit, True

        async def compute_and_store() -> tuple[Any, bool]:
            result = await compute()
            if cache is not None:
                await cache.set(slot, result, encode)
            return result, False

        outcome, _shared = await self._flights.do(slot.local, compute_and_store)
        return outcome

    def _count_call(self, operation: str) -> None:
        if self._metrics is not None:
            self._metrics.backend_calls_of(operation).inc()

    def _observe(self, operation: str, model: str) -> _Observed:
        return _Observed(self._metrics, operation, model)

    def _observe_tokens(self, operation: str, model: str, prompt: int, completion: int) -> None:
        if self._metrics is None:
            return
        tokens_of = self._metrics.tokens_of
        tokens_of(operation, model, "input").observe(prompt)
        if operation == GENERATE_OP:
            tokens_of(operation, model, "output").observe(completion)

    # -- Generate -------------------------------------------------------------

    async def generate(self, call: GenerateCall) -> GenerateOutcome:
        params = validate_generate(call, self._limits)
        request_tenant.set(call.tenant)
        ref = self._parse_ref(call.model)
        with (
            self._observe(GENERATE_OP, ref.name),
            current_span(self._tracer.start_span("inference.generate")) as span,
        ):
            entry = await self._pick(ref, call.routing_key, Task.GENERATE)
            span.set_attribute("gen_ai.response.model", entry.label)
            with entry.lease() as backend:
                _render_chat(call, backend)
                params = self._generation_params(call, entry, backend, params)

                async def compute() -> GenerationResult:
                    self._count_call(GENERATE_OP)
                    with current_span(self._tracer.start_span("inference.backend.generate")):
                        return await backend.generate(call.prompt, params)

                if params.deterministic and not call.skip_cache:
                    slot = self._generation_slot(entry, call.tenant, call.prompt, params)
                    result, cached = await self._through_cache(
                        slot, compute, encode_generation, decode_generation
                    )
                else:
                    result, cached = await compute(), False
            span.set_attribute("lattice.cached", cached)
            self._observe_tokens(
                GENERATE_OP, ref.name, result.prompt_tokens, result.completion_tokens
            )
            return GenerateOutcome(entry.name, entry.version, result, cached)

    # -- GenerateStream -------------------------------------------------------

    async def stream(self, call: GenerateCall) -> AsyncGenerator[StreamPart, None]:
        """Stream parts; the caller must close the iterator (aclosing) so that
        an abandoned stream stops the model at once.

        Spans are made current only around awaits, never across a `yield`: a
        generator may be closed from another context (a cancelled RPC), and a
        context attached across the yield could not be detached there."""
        params = validate_generate(call, self._limits)
        request_tenant.set(call.tenant)
        ref = self._parse_ref(call.model)
        started = time.perf_counter()
        span = self._tracer.start_span("inference.generate_stream")
        try:
            with self._observe(GENERATE_OP, ref.name):
                with trace.use_span(span):
                    entry = await self._pick(ref, call.routing_key, Task.GENERATE)
                span.set_attribute("gen_ai.response.model", entry.label)
                with entry.lease() as backend:
                    _render_chat(call, backend)
                    slot, hit = None, None
                    with trace.use_span(span):
                        params = self._generation_params(call, entry, backend, params)
                        if params.deterministic and not call.skip_cache and self._cache:
                            slot = self._generation_slot(entry, call.tenant, call.prompt, params)
                            hit = await self._cache.get(slot, decode_generation)
                    if hit is not None:
                        span.set_attribute("lattice.cached", True)
                        for part in _replay(entry, hit):
                            yield part
                        return
                    self._count_call(GENERATE_OP)
                    recorder = _StreamRecorder(started)
                    backend_span = self._tracer.start_span(
                        "inference.backend.stream", context=trace.set_span_in_context(span)
                    )
                    try:
                        chunks = backend.stream(call.prompt, params)
                        async with contextlib.aclosing(chunks):
                            async for chunk in chunks:
                                if recorder.add(chunk):
                                    self._observe_first_token(ref.name, recorder.ttft)
                                yield StreamPart(
                                    recorder.index, chunk, entry.name, entry.version, False
                                )
                    finally:
                        backend_span.end()
                await self._record_stream(ref.name, slot, recorder, span)
        finally:
            span.end()

    async def _record_stream(
        self, model: str, slot: CacheSlot | None, recorder: _StreamRecorder, span: trace.Span
    ) -> None:
        """Metrics for a finished stream, and its answer into the cache."""
        result = recorder.result()
        if result is None:
            return  # ended without a last chunk: nothing to record
        self._finish_stream(model, result, recorder)
        if (
            slot is not None
            and self._cache is not None
            and result.finish_reason is not FinishReason.CANCELLED
        ):
            with trace.use_span(span):
                await self._cache.set(slot, result, encode_generation)

    def _observe_first_token(self, model: str, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.time_to_first_token.labels(model).observe(seconds)

    def _finish_stream(
        self, model: str, result: GenerationResult, recorder: _StreamRecorder
    ) -> None:
        self._observe_tokens(GENERATE_OP, model, result.prompt_tokens, result.completion_tokens)
        if self._metrics is not None and result.completion_tokens > 1:
            per_token = recorder.since_first_token() / (result.completion_tokens - 1)
            self._metrics.time_per_output_token.labels(model).observe(per_token)

    # -- Embed and Classify -------------------------------------------------------

    async def embed(self, call: EmbedCall) -> EmbedOutcome:
        validate_embed(call, self._limits)
        entry, result, cached = await self._over_texts(_EMBED, call)
        return EmbedOutcome(entry.name, entry.version, result, cached)

    async def classify(self, call: ClassifyCall) -> ClassifyOutcome:
        """Label probabilities, through the same batching, cache and routing as Embed."""
        validate_classify(call, self._limits)
        entry, result, cached = await self._over_texts(_CLASSIFY, call)
        return ClassifyOutcome(entry.name, entry.version, result, cached, call.top_k)

    async def _over_texts(
        self, kind: _TextsKind[_C, _R], call: _C
    ) -> tuple[ServingVersion, _R, bool]:
        """Route, check each text against the version's limits, then the cache,
        then the version's micro-batcher (or the backend itself)."""
        ref = self._parse_ref(call.model)
        with (
            self._observe(kind.operation, ref.name),
            current_span(self._tracer.start_span(f"inference.{kind.name}")) as span,
        ):
            entry = await self._pick(ref, call.routing_key, kind.task)
            span.set_attribute("gen_ai.response.model", entry.label)
            with entry.lease() as backend:
                policy = self._view.policy(entry.name)
                limit = policy.max_prompt_tokens if policy is not None else 0
                for i, text in enumerate(call.inputs):
                    self._check_prompt(entry, backend, f"inputs[{i}]", text, limit)
                batcher = kind.batcher(entry)

                async def compute() -> _R:
                    self._count_call(kind.operation)
                    if batcher is not None:
                        return await batcher.submit(kind.item(call))
                    with current_span(self._tracer.start_span(f"inference.backend.{kind.name}")):
                        return await kind.direct(backend, call)

                if call.skip_cache:
                    result, cached = await compute(), False
                else:
                    slot = CacheSlot(
                        tenant_identity(call.tenant, entry.cache_identity),
                        (kind.name, call.inputs, *kind.options(call)),
                        sum(map(len, call.inputs)) + _SLOT_OVERHEAD,
                        lambda: kind.canonical(call),
                    )
                    result, cached = await self._through_cache(
                        slot, compute, kind.encode, kind.decode
                    )
            span.set_attribute("lattice.cached", cached)
            self._observe_tokens(kind.operation, ref.name, result.prompt_tokens, 0)
            return entry, result, cached

    # -- SimilarWords -----------------------------------------------------------

    async def similar_words(self, call: SimilarWordsCall) -> SimilarWordsOutcome:
        top_k = validate_similar(call)
        ref = self._parse_ref(call.model)
        with (
            self._observe(SIMILAR_OP, ref.name),
            current_span(self._tracer.start_span("inference.similar_words")) as span,
        ):
            entry = await self._pick(ref, call.routing_key, Task.EMBED)
            span.set_attribute("gen_ai.response.model", entry.label)
            with entry.lease() as backend:
                if not isinstance(backend, WordVectorBackend):
                    raise FailedPrecondition(
                        f"model {entry.name!r} is not a word-embedding model (WORD2VEC or GLOVE)"
                    )
                self._count_call(SIMILAR_OP)
                words = await asyncio.to_thread(backend.similar, call.word, call.vector, top_k)
            return SimilarWordsOutcome(entry.name, entry.version, words)


async def drain_stream(parts: AsyncGenerator[StreamPart, None]) -> list[StreamPart]:
    """Collect a whole stream (tests, benchmarks)."""
    async with contextlib.aclosing(parts) as stream:
        return [part async for part in stream]


__all__ = [
    "EmbedOutcome",
    "GenerateOutcome",
    "InferenceEngine",
    "StreamPart",
    "drain_stream",
]
