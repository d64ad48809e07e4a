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
import zlib

import numpy as np
from datasketch import MinHash, MinHashLSH

from services.trainer.data.language import CJK

_TOKEN = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
PERMUTATIONS = 128


def exact_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def shingles(text: str, language: str = "en", size: int = 3) -> np.ndarray:
    """32-bit hashes of the document's distinct shingles: character n-grams for
    CJK (spaces ignored; computed in numpy, as the characters themselves), word
    n-grams elsewhere."""
    if language in CJK:
        chars = _SPACE.sub("", text).encode("utf-32-le")
        points = np.frombuffer(chars, dtype="<u4").astype(np.uint64)
        if len(points) <= size:
            keys = np.array([sum(int(p) << (21 * i) for i, p in enumerate(points))], np.uint64)
            return _mix(keys) if len(points) else keys[:0]
        # Code points have 21 bits: three of them make an exact 63-bit key.
        keys = np.zeros(len(points) - size + 1, dtype=np.uint64)
        for offset in range(size):
            keys = (keys << np.uint64(21)) | points[offset : len(points) - size + 1 + offset]
        return _mix(np.unique(keys))
    words = _TOKEN.findall(text.lower())
    grams = {" ".join(words[i : i + size]) for i in range(max(1, len(words) - size + 1))}
    keys = np.array([zlib.crc32(g.encode()) for g in grams if g], dtype=np.uint64)
    return _mix(keys)


def _mix(keys: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, upper 32 bits: well-spread hashes for MinHash."""
    with np.errstate(over="ignore"):
        z = keys + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return z >> np.uint64(32)


def _already_hashed(value: int) -> int:
    return value


class NearDuplicateIndex:
    """Remembers kept documents; `add_if_new` says whether a new one is too similar."""

    def __init__(self, threshold: float = 0.8, permutations: int = PERMUTATIONS) -> None:
        self.threshold = threshold
        self.permutations = permutations
        # Weighted for recall (16 bands of 8 rows at 0.8): a missed candidate is
        # a kept duplicate, an extra one only costs a signature comparison.
        self._lsh = MinHashLSH(threshold=threshold, num_perm=permutations, weights=(0.05, 0.95))
        self._signatures: list[np.ndarray] = []
        # Built once: MinHash's permutations are derived from the seed.
        self._template = MinHash(num_perm=permutations, seed=1)

    def _minhash(self, features: np.ndarray) -> MinHash:
        minhash = MinHash(
            num_perm=self.permutations,
            hashfunc=_already_hashed,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
        )
        minhash.update_batch(features.tolist())
        return minhash

    def add_if_new(self, text: str, language: str = "en") -> bool:
        """Add the document and return True, or return False if it is a near duplicate."""
        features = shingles(text, language)
        if not len(features):
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
