"""One model version on this replica: its state, backend, batcher and leases.

A request holds a lease for as long as it uses the version (a stream: until
its last message), so draining can wait for exactly the in-flight requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Sequence

from opentelemetry import trace

from lattice.errors import Unavailable
from services.inference.backends import (
    Backend,
    ClassificationResult,
    EmbeddingResult,
    ModelInfo,
    Task,
)
from services.inference.batcher import Batcher, BatchObserver


class VersionState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class EmbedItem:
    texts: tuple[str, ...]
    normalize: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ClassifyItem:
    texts: tuple[str, ...]


class ServingVersion:
    """A version this replica loads, serves, drains or failed to load."""

    def __init__(
        self, name: str, version: int, digest: str, task: Task, backend_kind: str = ""
    ) -> None:
        self.name = name
        self.version = version
        self.digest = digest
        self.task = task
        self.backend_kind = backend_kind
        self.state = VersionState.LOADING
        self.error = ""
        self.load_time: float | None = None  # wall clock, when it became READY
        self.failed_at = 0.0  # monotonic
        self.attempts = 0
        self.backend: Backend | None = None
        self.info = ModelInfo()
        self.embed_batcher: Batcher[EmbedItem, EmbeddingResult] | None = None
        self.classify_batcher: Batcher[ClassifyItem, ClassificationResult] | None = None
        self.unloading = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Set once loading ended (READY or FAILED).
        self.settled = asyncio.Event()

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def cache_identity(self) -> str:
        """What cached answers are bound to: the artifact digest, or for a version
        without one (a model served by Triton at a URI) its own name and number, so
        answers never leak across versions or models."""
        return self.digest or f"version:{self.label}"

    def mark_ready(self) -> None:
        self.state = VersionState.READY
        self.error = ""
        self.load_time = time.time()
        self.settled.set()

    def mark_failed(self, error: str) -> None:
        self.state = VersionState.FAILED
        self.error = error
        self.failed_at = time.monotonic()
        self.settled.set()

    @property
    def servable(self) -> bool:
        """READY, or DRAINING but not yet unloading (pinned requests only)."""
        if self.backend is None or self.unloading:
            return False
        return self.state in (VersionState.READY, VersionState.DRAINING)

    def lease(self) -> _Lease:
        """Count one in-flight request (`with entry.lease() as backend:`);
        draining waits for all to finish. Taken synchronously right after the
        version was picked, so no state change can slip in between."""
        return _Lease(self)

    def _release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float | None = None) -> bool:
        """True when no request is in flight (False: gave up after timeout)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def start_batching(
        self,
        *,
        max_batch_size: int,
        max_wait: float,
        observer: BatchObserver | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        """Put a micro-batcher in front of an embedding or classification backend
        that batches. (Generation is batched per step by the backend's own
        scheduler.)"""
        backend = self.backend
        if backend is None:
            return
        size = min(max_batch_size, backend.max_batch_size)
        if size <= 1:
            return
        tracer = tracer or trace.get_tracer(__name__)
        if self.task is Task.EMBED:

            async def run_embed(items: Sequence[EmbedItem]) -> list[EmbeddingResult]:
                with tracer.start_as_current_span("inference.backend.embed"):
                    return await embed_merged(backend, items)

            self.embed_batcher = Batcher(
                run_embed,
                max_batch_size=size,
                max_wait=max_wait,
                rows=lambda item: len(item.texts),
                name=f"embed.{self.label}",
                observer=observer,
                tracer=tracer,
            )
        elif self.task is Task.CLASSIFY:

            async def run_classify(items: Sequence[ClassifyItem]) -> list[ClassificationResult]:
                with tracer.start_as_current_span("inference.backend.classify"):
                    return await classify_merged(backend, items)

            self.classify_batcher = Batcher(
                run_classify,
                max_batch_size=size,
                max_wait=max_wait,
                rows=lambda item: len(item.texts),
                name=f"classify.{self.label}",
                observer=observer,
                tracer=tracer,
            )

    async def close(self) -> None:
        if self.embed_batcher is not None:
            await self.embed_batcher.close()
        self.embed_batcher = None
        if self.classify_batcher is not None:
            await self.classify_batcher.close()
        self.classify_batcher = None
        if self.backend is not None:
            backend, self.backend = self.backend, None
            await backend.unload()


class _Lease:
    """One in-flight request on a version (a class, not a generator-based
    context manager: it is taken on every request)."""

    __slots__ = ("_entry",)

    def __init__(self, entry: ServingVersion) -> None:
        self._entry = entry

    def __enter__(self) -> Backend:
        entry = self._entry
        if not entry.servable:
            raise Unavailable(f"{entry.label} is {entry.state.value}, not serving")
        entry.in_flight += 1
        entry._idle.clear()
        return entry.backend  # type: ignore[return-value]

    def __exit__(self, *exc_info: object) -> None:
        self._entry._release()


async def embed_merged(backend: Backend, items: Sequence[EmbedItem]) -> list[EmbeddingResult]:
    """Run several Embed requests as one backend call per `normalize` value
    and split the vectors back per request."""
    results: list[EmbeddingResult | None] = [None] * len(items)
    for normalize in (False, True):
        picked = [i for i, item in enumerate(items) if item.normalize is normalize]
        if not picked:
            continue
        texts = [text for i in picked for text in items[i].texts]
        merged = await backend.embed(texts, normalize=normalize)
        offset = 0
        for i in picked:
            size = len(items[i].texts)
            results[i] = EmbeddingResult(
                vectors=merged.vectors[offset : offset + size],
                token_counts=merged.token_counts[offset : offset + size],
                unknown_words=merged.unknown_words[offset : offset + size],
            )
            offset += size
    return [r for r in results if r is not None]


async def classify_merged(
    backend: Backend, items: Sequence[ClassifyItem]
) -> list[ClassificationResult]:
    """Run several Classify requests as one backend call and split the scores
    back per request."""
    merged = await backend.classify([text for item in items for text in item.texts])
    results, offset = [], 0
    for item in items:
        size = len(item.texts)
        results.append(
            ClassificationResult(
                labels=merged.labels,
                scores=merged.scores[offset : offset + size],
                token_counts=merged.token_counts[offset : offset + size],
            )
        )
        offset += size
    return results
