"""Cached answers as bytes: small JSON documents, readable with redis-cli
and independent of pickle (Redis content is not trusted to run code)."""

from __future__ import annotations

import json

from services.inference.backends import (
    ClassificationResult,
    EmbeddingResult,
    FinishReason,
    GenerationResult,
)


def encode_generation(result: GenerationResult) -> bytes:
    return json.dumps(
        {
            "text": result.text,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "finish_reason": result.finish_reason.value,
        },
        ensure_ascii=False,
    ).encode()


def decode_generation(raw: bytes) -> GenerationResult:
    data = json.loads(raw)
    return GenerationResult(
        text=data["text"],
        prompt_tokens=data["prompt_tokens"],
        completion_tokens=data["completion_tokens"],
        finish_reason=FinishReason(data["finish_reason"]),
    )


def encode_embedding(result: EmbeddingResult) -> bytes:
    payload = {"vectors": result.vectors, "token_counts": result.token_counts}
    if result.unknown_words:
        payload["unknown_words"] = result.unknown_words
    return json.dumps(payload).encode()


def decode_embedding(raw: bytes) -> EmbeddingResult:
    data = json.loads(raw)
    return EmbeddingResult(
        vectors=data["vectors"],
        token_counts=data["token_counts"],
        unknown_words=data.get("unknown_words", []),
    )


def encode_classification(result: ClassificationResult) -> bytes:
    return json.dumps(
        {"labels": result.labels, "scores": result.scores, "token_counts": result.token_counts},
        ensure_ascii=False,
    ).encode()


def decode_classification(raw: bytes) -> ClassificationResult:
    data = json.loads(raw)
    return ClassificationResult(
        labels=data["labels"], scores=data["scores"], token_counts=data["token_counts"]
    )
