"""Weighted and sticky version picking."""

from __future__ import annotations

import random
from collections import Counter

from lattice.routing import pick_weighted


def test_weights_are_followed():
    rng = random.Random(1)
    picks = Counter(pick_weighted("m", [(1, 90), (2, 10)], rng=rng) for _ in range(5000))
    assert 0.87 < picks[1] / 5000 < 0.93


def test_zero_weight_never_picked():
    rng = random.Random(2)
    assert {pick_weighted("m", [(1, 100), (2, 0)], rng=rng) for _ in range(500)} == {1}


def test_routing_key_is_sticky_and_spreads():
    routes = [(1, 50), (2, 50)]
    for key in ("alice", "bob", "carol"):
        assert len({pick_weighted("m", routes, key) for _ in range(20)}) == 1
    spread = Counter(pick_weighted("m", routes, f"user-{i}") for i in range(1000))
    assert 400 < spread[1] < 600
