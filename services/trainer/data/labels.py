"""Labelled datasets: the stratified train/validation split and the label checks."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

from lattice.errors import InvalidArgument
from lattice.v1 import trainer_pb2


def check_labels(labels: Sequence[str], missing: int, source: trainer_pb2.DataSource) -> None:
    """INVALID_ARGUMENT for a label field no record has, or fewer than two labels."""
    if not labels and missing:
        raise InvalidArgument(
            "spec.sources[0].label_field",
            f"no record has a label in field {source.label_field!r} ({missing} without one)",
        )
    found = sorted(set(labels))
    if len(found) < 2:
        raise InvalidArgument(
            "spec.sources",
            f"a classification dataset needs at least two labels; found only {found}",
        )


def stratified_split(
    labels: Sequence[str], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, validation): each class contributes round(n_c * fraction)
    examples to validation (at least one, and never all, when it has two or more),
    chosen by a seeded shuffle; both lists keep the original order."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    validation: set[int] = set()
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        count = round(len(members) * fraction)
        count = min(max(1, count), len(members) - 1) if len(members) >= 2 else 0
        validation.update(members[:count])
    train = [i for i in range(len(labels)) if i not in validation]
    return train, sorted(validation)
