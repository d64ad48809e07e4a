"""SimilarWords: the request, its checks and its answer (transport-free)."""

from __future__ import annotations

import dataclasses
import math

from lattice.errors import InvalidArgument

DEFAULT_TOP_K = 10
MAX_TOP_K = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class SimilarWordsCall:
    model: str
    word: str | None = None
    vector: tuple[float, ...] | None = None
    top_k: int = 0
    routing_key: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class SimilarWordsOutcome:
    model_name: str
    version: int
    words: list[tuple[str, float]]


def validate_similar(call: SimilarWordsCall) -> int:
    """The effective top_k; InvalidArgument naming the field for bad input."""
    if not call.model:
        raise InvalidArgument("model", "required")
    if call.word is None and call.vector is None:
        raise InvalidArgument("query", "set word or vector")
    if call.word is not None and not call.word.strip():
        raise InvalidArgument("word", "must not be empty")
    if call.vector is not None:
        if not call.vector:
            raise InvalidArgument("vector", "must not be empty")
        if not all(math.isfinite(v) for v in call.vector):
            raise InvalidArgument("vector", "values must be finite")
    if call.top_k > MAX_TOP_K:
        raise InvalidArgument("top_k", f"must be within 1..{MAX_TOP_K}")
    return call.top_k or DEFAULT_TOP_K
