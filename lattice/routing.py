"""Pick one version of a model by traffic weight: the one rule both sides use.

The gateway routes with it and inference re-routes with it when a request
arrives unpinned, so the same `routing_key` lands on the same version on
either side. Without a key the pick is random in proportion to the weights.
With one, a stable hash of (model, key) is placed on the cumulative weights
(in version order), so a key keeps its version while the candidates are
unchanged, and when weights shift only the keys in the moved share move.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence


def sticky_point(model: str, routing_key: str) -> float:
    """A stable point in [0, 1) for (model, key): the same on every replica and restart."""
    digest = hashlib.blake2b(f"{model}\0{routing_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pick_weighted(
    model: str,
    candidates: Sequence[tuple[int, int]],
    routing_key: str = "",
    *,
    rng: random.Random | None = None,
) -> int:
    """Choose a version from (version, weight) pairs with a positive total weight."""
    ordered = sorted((version, weight) for version, weight in candidates if weight > 0)
    total = sum(weight for _, weight in ordered)
    if total <= 0:
        raise ValueError("no candidate has a positive weight")
    unit = sticky_point(model, routing_key) if routing_key else (rng or random).random()
    point = unit * total
    for version, weight in ordered:
        if point < weight:
            return version
        point -= weight
    return ordered[-1][0]
