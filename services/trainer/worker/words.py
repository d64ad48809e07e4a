"""A prepared dataset's documents as word lists, for the word-embedding families.

Segmentation is `services.runtime.words` (shared with serving). The data pipeline
(issue 18) will store segmented word lists itself; until then the worker
segments the cleaned text here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from services.runtime.words import words_of


def read_documents(path: Path) -> Iterator[str]:
    """The `text` of every line of a prepared dataset's JSONL split."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)["text"]


def load_sentences(dataset_dir: Path, whitespace_only: bool) -> list[list[str]]:
    """Every training document of a prepared dataset as a word list (empty ones dropped)."""
    sentences = []
    for text in read_documents(dataset_dir / "train.jsonl"):
        words = words_of(text, whitespace_only)
        if words:
            sentences.append(words)
    return sentences
