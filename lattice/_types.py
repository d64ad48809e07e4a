"""Typed results of the inference calls (registry and trainer calls return the
`lattice.v1` messages themselves, which are typed by their .pyi stubs)."""

from __future__ import annotations

import dataclasses

from lattice.v1 import common_pb2, inference_pb2

_FINISH_REASONS: dict[int, str] = {
    inference_pb2.FINISH_REASON_UNSPECIFIED: "",
    inference_pb2.FINISH_REASON_LENGTH: "length",
    inference_pb2.FINISH_REASON_EOS: "eos",
    inference_pb2.FINISH_REASON_STOP_SEQUENCE: "stop_sequence",
    inference_pb2.FINISH_REASON_CANCELLED: "cancelled",
}


def finish_reason_name(value: int) -> str:
    """ "length", "eos", "stop_sequence", "cancelled", or "" while unfinished."""
    return _FINISH_REASONS.get(value, "")


@dataclasses.dataclass(frozen=True)
class Usage:
    """Token accounting for one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_proto(cls, usage: common_pb2.Usage) -> Usage:
        return cls(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


@dataclasses.dataclass(frozen=True)
class Generation:
    """The result of `generate`."""

    text: str
    model_name: str
    model_version: int
    #: "length", "eos", "stop_sequence" or "cancelled".
    finish_reason: str
    usage: Usage
    #: True when served from the response cache.
    cached: bool

    @classmethod
    def from_proto(cls, response: inference_pb2.GenerateResponse) -> Generation:
        return cls(
            text=response.text,
            model_name=response.model_name,
            model_version=response.model_version,
            finish_reason=finish_reason_name(response.finish_reason),
            usage=Usage.from_proto(response.usage),
            cached=response.cached,
        )


@dataclasses.dataclass(frozen=True)
class GenerationDelta:
    """One message of `stream`: the text added since the previous one."""

    text: str
    index: int
    #: Set on the first delta.
    model_name: str
    model_version: int
    #: Set on the last delta only; "" before.
    finish_reason: str
    #: Set on the last delta only.
    usage: Usage | None
    cached: bool

    @classmethod
    def from_proto(cls, response: inference_pb2.GenerateStreamResponse) -> GenerationDelta:
        return cls(
            text=response.delta,
            index=response.index,
            model_name=response.model_name,
            model_version=response.model_version,
            finish_reason=finish_reason_name(response.finish_reason),
            usage=Usage.from_proto(response.usage) if response.HasField("usage") else None,
            cached=response.cached,
        )


@dataclasses.dataclass(frozen=True)
class Embeddings:
    """The result of `embed`: one vector per input, in input order. For a
    word-embedding model, `unknown_words[i]` are input i's words missing from the
    vocabulary (all of them: its vector is zeros)."""

    vectors: list[list[float]]
    model_name: str
    model_version: int
    usage: Usage
    cached: bool
    unknown_words: list[list[str]] = dataclasses.field(default_factory=list)

    @classmethod
    def from_proto(cls, response: inference_pb2.EmbedResponse) -> Embeddings:
        return cls(
            vectors=[list(e.values) for e in response.embeddings],
            model_name=response.model_name,
            model_version=response.model_version,
            usage=Usage.from_proto(response.usage),
            cached=response.cached,
            unknown_words=[list(e.unknown_words) for e in response.embeddings],
        )


@dataclasses.dataclass(frozen=True)
class SimilarWords:
    """The result of `similar_words`: (word, cosine similarity), most similar first."""

    words: list[tuple[str, float]]
    model_name: str
    model_version: int

    @classmethod
    def from_proto(cls, response: inference_pb2.SimilarWordsResponse) -> SimilarWords:
        return cls(
            words=[(w.word, w.similarity) for w in response.words],
            model_name=response.model_name,
            model_version=response.model_version,
        )


@dataclasses.dataclass(frozen=True)
class Classifications:
    """The result of `classify`: per input, in input order, (label, probability)
    highest first (top_k of them, or every label)."""

    labels: list[list[tuple[str, float]]]
    model_name: str
    model_version: int
    usage: Usage
    cached: bool

    @property
    def top(self) -> list[str]:
        """Each input's most likely label."""
        return [ranked[0][0] for ranked in self.labels]

    @classmethod
    def from_proto(cls, response: inference_pb2.ClassifyResponse) -> Classifications:
        return cls(
            labels=[[(s.label, s.score) for s in c.labels] for c in response.classifications],
            model_name=response.model_name,
            model_version=response.model_version,
            usage=Usage.from_proto(response.usage),
            cached=response.cached,
        )
