"""A prepared dataset's documents as word lists, for the word-embedding families.

A dataset prepared with `segment_words` stores each document's word list (the
data pipeline's segmentation, stop words already removed when asked): those are
used as they are. Otherwise the cleaned text is cut here with
`services.runtime.words`, the rule serving uses on Embed inputs.
"""

from __future__ import annotations

from pathlib import Path

from services.runtime.keys import KeyManager
from services.runtime.words import words_of
from services.trainer.data.records import read_records


def load_sentences(
    dataset_dir: Path, whitespace_only: bool, keys: KeyManager | None = None
) -> list[list[str]]:
    """Every training document of a prepared dataset as a word list (empty ones dropped)."""
    sentences = []
    for record in read_records(dataset_dir, "train", keys):
        if record.words is not None:
            words = list(record.words)
        else:
            words = words_of(record.text, whitespace_only)
        if words:
            sentences.append(words)
    return sentences
