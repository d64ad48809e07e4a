"""A training worker with a fault injected through the Trainer's constructor.

The service runs it instead of `services.trainer.worker` when a test builds the
server with `worker_module="tests.trainer.faulty_worker"`; the test says which
fault through `FAULT_ENV` (test code only; production code has no switch).
"""

from __future__ import annotations

import os

import torch

from services.trainer.worker.train import main

FAULT_ENV = "LATTICE_TEST_WORKER_FAULT"


class NanInputsAtStep:
    """Turns step N's input embeddings into NaN (a NaN in the data), once per
    process: a rolled-back run replays step N cleanly."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.fired = False

    def inputs(self, step: int, embeddings: torch.Tensor) -> torch.Tensor:
        if step == self.step and embeddings.requires_grad and not self.fired:
            self.fired = True
            return embeddings * float("nan")
        return embeddings


def fault_from_environment() -> NanInputsAtStep:
    kind, _, value = os.environ[FAULT_ENV].partition("=")
    if kind != "nan_inputs_at_step":
        raise SystemExit(f"unknown test fault {kind!r}")
    return NanInputsAtStep(int(value))


if __name__ == "__main__":
    main(fault=fault_from_environment())
