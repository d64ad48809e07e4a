"""Documents to word lists, for the word-embedding families.

Whitespace separates words; a run of Chinese characters with no spaces in it is
cut into words with jieba. Text that is already segmented (spaces between the
words, as in the People's Daily corpus) passes through unchanged.

The data pipeline (issue 18) will produce segmented word lists itself; until it
does, this is the one place a worker segments text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import jieba  # type: ignore[import-untyped]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def words_of(text: str, whitespace_only: bool = False) -> list[str]:
    """The words of one document."""
    words: list[str] = []
    for piece in text.split():
        if whitespace_only or len(piece) < 2 or not _CJK.search(piece):
            words.append(piece)
        else:
            words.extend(w for w in jieba.lcut(piece, HMM=True) if w.strip())
    return words


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
