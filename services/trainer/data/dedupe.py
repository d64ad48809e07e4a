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
from collections.abc import Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

from services.trainer.data.language import CJK

_TOKEN = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
PERMUTATIONS = 128
#: MinHashLSH's weights of false positives and false negatives when it picks bands.
WEIGHTS = (0.05, 0.95)


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


def _holders(found: int | list[int] | None) -> Sequence[int]:
    """The documents in a bucket (one is stored as a bare int: most buckets hold one)."""
    if found is None:
        return ()
    return found if isinstance(found, list) else (found,)


class NearDuplicateIndex:
    """Remembers kept documents; `add_if_new` says whether a new one is too similar.

    The banding is datasketch's MinHashLSH's (its bands and rows for the
    threshold, a candidate shares one band exactly), kept in plain dicts of
    64-bit band hashes: 1.6 KB a document where MinHashLSH's dict storage (a
    set and a bytes key per band) takes 5.8 KB, so a million documents fit in
    under 2 GB. tests/trainer/test_datasets_chinese.py checks that both keep
    and drop the same documents.
    """

    def __init__(self, threshold: float = 0.8, permutations: int = PERMUTATIONS) -> None:
        self.threshold = threshold
        self.permutations = permutations
        # Weighted for recall (16 bands of 8 rows at 0.8): a missed candidate is
        # a kept duplicate, an extra one only costs a signature comparison.
        chosen = MinHashLSH(threshold=threshold, num_perm=permutations, weights=WEIGHTS)
        self.bands, self.rows = chosen.b, chosen.r
        # Per band: band hash -> the document holding it, or a list once several do.
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self.bands)]
        # Kept documents' signatures (uint32 bytes), indexed by document number.
        self._signatures: list[bytes] = []
        # Built once: MinHash's permutations are derived from the seed.
        self._template = MinHash(num_perm=permutations, seed=1)
        # Random odd multipliers: a band's rows hash to one 64-bit integer.
        generator = np.random.default_rng(0x5EED)
        self._multipliers = generator.integers(0, 2**63, self.rows, dtype=np.uint64) * 2 + 1

    def signature(self, features: np.ndarray) -> np.ndarray:
        """The document's MinHash (datasketch's permutations, seed 1), as uint32."""
        minhash = MinHash(
            num_perm=self.permutations,
            hashfunc=_already_hashed,
            permutations=self._template.permutations,
            scheme=self._template.scheme,
        )
        minhash.update_batch(features.tolist())
        return minhash.hashvalues.astype(np.uint32)  # MinHash values are < 2**32

    def _band_keys(self, signature: np.ndarray) -> list[int]:
        rows = signature[: self.bands * self.rows].reshape(self.bands, self.rows)
        with np.errstate(over="ignore"):
            return (rows.astype(np.uint64) * self._multipliers).sum(axis=1).tolist()

    def add_if_new(self, text: str, language: str = "en") -> bool:
        """Add the document and return True, or return False if it is a near duplicate."""
        features = shingles(text, language)
        if not len(features):
            return True
        signature = self.signature(features)
        keys = self._band_keys(signature)
        compared: set[int] = set()
        for bucket, key in zip(self._buckets, keys, strict=True):
            for document in _holders(bucket.get(key)):
                if document in compared:
                    continue
                compared.add(document)
                kept = np.frombuffer(self._signatures[document], dtype=np.uint32)
                if np.mean(kept == signature) >= self.threshold:
                    return False
        document = len(self._signatures)
        self._signatures.append(signature.tobytes())
        for bucket, key in zip(self._buckets, keys, strict=True):
            found = bucket.get(key)
            if found is None:
                bucket[key] = document
            elif isinstance(found, list):
                found.append(document)
            else:
                bucket[key] = [found, document]
        return True
