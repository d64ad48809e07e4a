"""Learning-rate schedules with linear warm-up, as LambdaLR multipliers."""

from __future__ import annotations

import math
from collections.abc import Callable

from lattice.v1 import trainer_pb2


def lr_lambda(kind: int, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == trainer_pb2.LEARNING_RATE_SCHEDULE_CONSTANT:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == trainer_pb2.LEARNING_RATE_SCHEDULE_LINEAR:
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
