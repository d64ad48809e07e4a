"""Evaluation of trained word vectors, shared by Word2Vec and GloVe jobs (the
artifact they write is `services.runtime.word_vector_files`)."""

from __future__ import annotations

import math
from typing import Any

from gensim.models import KeyedVectors


def evaluate(
    vectors: KeyedVectors,
    pairs_path: str = "",
    analogies_path: str = "",
    samples: list[str] | None = None,
    neighbours: int = 5,
) -> tuple[dict[str, float], dict[str, list[list[Any]]]]:
    """Version metrics (similarity correlation, analogy accuracy, when given) and
    the nearest neighbours of sample words (default: the five most frequent)."""
    metrics: dict[str, float] = {"vocab_size": float(len(vectors.index_to_key))}
    if pairs_path:
        pearson, spearman, oov = vectors.evaluate_word_pairs(pairs_path)
        metrics["similarity_pearson"] = float(pearson[0])
        metrics["similarity_spearman"] = float(spearman.statistic)
        metrics["similarity_oov_ratio"] = float(oov) / 100.0
    if analogies_path:
        score, _sections = vectors.evaluate_word_analogies(analogies_path)
        metrics["analogy_accuracy"] = float(score)
    chosen = [w for w in (samples or vectors.index_to_key[:5]) if w in vectors.key_to_index]
    near = {
        word: [
            [other, round(float(score), 4)]
            for other, score in vectors.most_similar(word, topn=neighbours)
        ]
        for word in chosen
    }
    metrics = {k: v for k, v in metrics.items() if math.isfinite(v)}
    return metrics, near
