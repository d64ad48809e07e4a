"""Exact and near-duplicate detection.

Near duplicates: datasketch MinHash signatures, MinHashLSH (banding) to find
candidates in time that grows with the corpus, not with its square; a candidate
counts when the signatures' estimated Jaccard similarity reaches the threshold.
Shingles are character 3-grams for languages written without spaces (a
one-character edit then changes at most three of them) and word 3-grams
elsewhere. The first document of a near-duplicate group is kept (input order).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from datasketch import MinHash, MinHashLSH  # type: ignore[import-untyped]

from services.trainer.data.language import CJK

_TOKEN = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
PERMUTATIONS = 128


def exact_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def shingles(text: str, language: str = "en", size: int = 3) -> set[bytes]:
    """Character n-grams (CJK, spaces ignored) or word n-grams (elsewhere)."""
    if language in CJK:
        chars = _SPACE.sub("", text)
        if len(chars) <= size:
            return {chars.encode()} if chars else set()
        return {chars[i : i + size].encode() for i in range(len(chars) - size + 1)}
    words = _TOKEN.findall(text.lower())
    if len(words) < size:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + size]).encode() for i in range(len(words) - size + 1)}


class NearDuplicateIndex:
    """Remembers kept documents; `add_if_new` says whether a new one is too similar."""

    def __init__(self, threshold: float = 0.8, permutations: int = PERMUTATIONS) -> None:
        self.threshold = threshold
        self.permutations = permutations
        self._lsh = MinHashLSH(threshold=threshold, num_perm=permutations)
        self._signatures: list[np.ndarray] = []
        # Built once: MinHash's permutations are derived from the seed.
        self._template = MinHash(num_perm=permutations, seed=1)

    def _minhash(self, features: set[bytes]) -> MinHash:
        minhash = MinHash(
            num_perm=self.permutations,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
        )
        minhash.update_batch(list(features))
        return minhash

    def add_if_new(self, text: str, language: str = "en") -> bool:
        """Add the document and return True, or return False if it is a near duplicate."""
        features = shingles(text, language)
        if not features:
            return True
        minhash = self._minhash(features)
        signature = minhash.hashvalues.astype(np.uint32)
        for key in self._lsh.query(minhash):
            if np.mean(self._signatures[key] == signature) >= self.threshold:
                return False
        key = len(self._signatures)
        self._signatures.append(signature)
        self._lsh.insert(key, minhash, check_duplication=False)
        return True
