"""Pick one version of a model by traffic weight.

Without a routing key the pick is random in proportion to the weights. With
one, it is a stable hash of (model, key) onto the cumulative weights, so the
same key keeps landing on the same version while the candidates are
unchanged, and when weights shift only the keys in the moved share move.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence


def _stable_point(model: str, key: str, total: int) -> int:
    digest = hashlib.sha256(f"{model}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % total


def pick_weighted(
    model: str,
    candidates: Sequence[tuple[int, int]],
    routing_key: str = "",
    *,
    rng: random.Random | None = None,
) -> int:
    """Choose a version from (version, weight) pairs with positive total weight."""
    ordered = sorted(candidates)
    total = sum(weight for _, weight in ordered)
    if total <= 0:
        raise ValueError("no candidate has a positive weight")
    if routing_key:
        point = _stable_point(model, routing_key, total)
    else:
        point = (rng or random).randrange(total)
    for version, weight in ordered:
        if point < weight:
            return version
        point -= weight
    return ordered[-1][0]
