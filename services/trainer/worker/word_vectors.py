"""Word-vector artifacts and their evaluation, shared by Word2Vec and GloVe jobs.

The artifact is a directory with `vectors.txt` (or `vectors.bin`) in the word2vec
format that `gensim.models.KeyedVectors.load_word2vec_format` reads, and
`manifest.json` saying which file, which family and the vector size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gensim.models import KeyedVectors

MANIFEST = "manifest.json"


def write_artifact(
    vectors: KeyedVectors, export_dir: Path, family: str, binary: bool, extra: dict[str, Any]
) -> Path:
    """Write the vectors and the manifest into `export_dir` (created)."""
    export_dir.mkdir(parents=True, exist_ok=True)
    name = "vectors.bin" if binary else "vectors.txt"
    vectors.save_word2vec_format(str(export_dir / name), binary=binary)
    manifest = {
        "format": "word2vec",
        "file": name,
        "binary": binary,
        "family": family,
        "dimensions": int(vectors.vector_size),
        "vocab_size": len(vectors.index_to_key),
        **extra,
    }
    (export_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return export_dir


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


def write_result(result_path: Path, result: dict[str, Any]) -> None:
    """Write result.json atomically (the service reads it once the group exits)."""
    temp = result_path.with_suffix(".tmp")
    temp.write_text(json.dumps(result, default=str))
    temp.rename(result_path)
