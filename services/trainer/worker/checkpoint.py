"""Atomic checkpoints: a directory written under a temporary name, every file
fsynced, then renamed into place (and the parent fsynced). A crash mid-write
leaves only a `.tmp-*` directory, which is ignored and cleaned up; a
`step-N` directory is always complete.

`state.pt` (rank 0) holds the full model and optimiser state (gathered under
FSDP), the scheduler, the step, the health monitor and the data position;
`rng-<rank>.pt` holds each rank's RNG states.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

_STEP_DIR = re.compile(r"^step-(\d{8})$")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(obj: Any, path: Path) -> None:
    with path.open("wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest(directory: Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint, or None."""
    if not directory.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in directory.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / "state.pt").is_file()
    ]
    return max(found) if found else None


def save(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict,
    rank: int,
    keep: int,
) -> Path:
    """Collective: every rank calls it. Returns the final directory."""
    model_state, optim_state = get_state_dict(model, optimizer, options=FULL)
    final = directory / f"step-{step:08d}"
    temp = directory / f".tmp-step-{step:08d}"
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        _save({"model": model_state, "optimizer": optim_state, **extra}, temp / "state.pt")
    _barrier()
    _save(rng_state(), temp / f"rng-{rank}.pt")
    _barrier()
    if rank == 0:
        for path in temp.iterdir():
            _fsync_file(path)
        shutil.rmtree(final, ignore_errors=True)
        temp.rename(final)
        _fsync_file(directory)
        _prune(directory, keep)
    _barrier()
    return final


def _prune(directory: Path, keep: int) -> None:
    steps = sorted(
        (int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name))
    )
    for _, path in steps[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
    for path in directory.glob(".tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> dict:
    """Collective: restore model, optimiser and this rank's RNG; returns the extras."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state.pop("model"),
        optim_state_dict=state.pop("optimizer"),
        options=StateDictOptions(full_state_dict=True),
    )
    rng_path = path / f"rng-{rank}.pt"
    if rng_path.is_file():
        restore_rng(torch.load(rng_path, weights_only=False))
    return state


def save_best(directory: Path, model: torch.nn.Module, rank: int, extra: dict) -> None:
    """Collective: keep the model weights of the best evaluation so far (atomically)."""
    model_state = get_model_state_dict(model, options=FULL)
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        temp = directory / ".tmp-model.pt"
        _save({"model": model_state, **extra}, temp)
        temp.rename(directory / "model.pt")
        _fsync_file(directory)


def full_model_state(model: torch.nn.Module) -> dict:
    """Collective: the full (unsharded) model state on rank 0's CPU."""
    return get_model_state_dict(model, options=FULL)
