"""Text to words, the one rule the word-embedding families train and serve with.

Whitespace separates words; a run of Chinese characters with no spaces in it is
cut into words with jieba. Text that is already segmented (spaces between the
words, as in the People's Daily corpus) passes through unchanged. The trainer
uses it on documents, the inference service on Embed inputs, so a word means
the same on both sides.
"""

from __future__ import annotations

import re

import jieba

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def words_of(text: str, whitespace_only: bool = False) -> list[str]:
    """The words of one text."""
    words: list[str] = []
    for piece in text.split():
        if whitespace_only or len(piece) < 2 or not _CJK.search(piece):
            words.append(piece)
        else:
            words.extend(w for w in jieba.lcut(piece, HMM=True) if w.strip())
    return words
