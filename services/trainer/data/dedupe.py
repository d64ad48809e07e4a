"""Exact and near-duplicate detection.

Near duplicates: MinHash signatures over word 3-gram shingles, LSH banding to
find candidate pairs, then the *exact* Jaccard similarity of the shingle sets
decides, so the result does not depend on hash luck beyond candidate recall.
The first document of a near-duplicate group is kept (input order).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict

import numpy as np

_PRIME = np.uint64((1 << 31) - 1)
_TOKEN = re.compile(r"\w+")


def exact_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def shingles(text: str, size: int = 3) -> frozenset[int]:
    words = _TOKEN.findall(text.lower())
    if len(words) < size:
        return frozenset([zlib.crc32(" ".join(words).encode())]) if words else frozenset()
    return frozenset(
        zlib.crc32(" ".join(words[i : i + size]).encode()) for i in range(len(words) - size + 1)
    )


class NearDuplicateIndex:
    """Remembers kept documents; `is_duplicate` says whether a new one is too similar."""

    def __init__(self, threshold: float = 0.8, permutations: int = 128, bands: int = 32) -> None:
        if permutations % bands:
            raise ValueError("permutations must be a multiple of bands")
        self.threshold = threshold
        self.bands = bands
        self.rows = permutations // bands
        rng = np.random.default_rng(0x1A77)
        self._a = rng.integers(1, int(_PRIME), size=permutations, dtype=np.uint64)
        self._b = rng.integers(0, int(_PRIME), size=permutations, dtype=np.uint64)
        self._buckets: list[dict[bytes, list[int]]] = [defaultdict(list) for _ in range(bands)]
        self._kept: list[frozenset[int]] = []

    def _signature(self, features: frozenset[int]) -> np.ndarray:
        values = np.fromiter(features, dtype=np.uint64, count=len(features)) % _PRIME
        hashed = (values[:, None] * self._a[None, :] + self._b[None, :]) % _PRIME
        return hashed.min(axis=0)

    def add_if_new(self, text: str) -> bool:
        """Add the document and return True, or return False if it is a near duplicate."""
        features = shingles(text)
        if not features:
            return True
        signature = self._signature(features)
        keys = [
            signature[band * self.rows : (band + 1) * self.rows].tobytes()
            for band in range(self.bands)
        ]
        candidates: set[int] = set()
        for band, key in enumerate(keys):
            candidates.update(self._buckets[band].get(key, ()))
        for index in sorted(candidates):
            other = self._kept[index]
            jaccard = len(features & other) / len(features | other)
            if jaccard >= self.threshold:
                return False
        index = len(self._kept)
        self._kept.append(features)
        for band, key in enumerate(keys):
            self._buckets[band][key].append(index)
        return True
