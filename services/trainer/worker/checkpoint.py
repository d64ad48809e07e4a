"""Atomic checkpoints: a directory written under a temporary name, every file
fsynced, then renamed into place (and the parent fsynced). A crash mid-write
leaves only a `.tmp-*` directory, which is ignored and cleaned up; a
`step-N` directory is always complete.

Model and optimiser state are written with `torch.distributed.checkpoint`
(each rank its own shards under FSDP; resharding on load); `state.pt` (rank 0)
holds the scheduler, the step (= the data position) and the health monitor;
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
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
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


def _publish(temp: Path, final: Path, directory: Path) -> None:
    """Rank 0: fsync every file of `temp`, rename it to `final`, fsync the parent."""
    for path in temp.rglob("*"):
        if path.is_file():
            _fsync_file(path)
    shutil.rmtree(final, ignore_errors=True)
    temp.rename(final)
    _fsync_file(directory)


def save(
    directory: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict,
    rank: int,
    keep: int,
) -> Path:
    """Collective: every rank writes its shards (torch.distributed.checkpoint, so FSDP
    never gathers the whole model in one place) and its RNG state."""
    model_state, optim_state = get_state_dict(model, optimizer)
    final = directory / f"step-{step:08d}"
    temp = directory / f".tmp-step-{step:08d}"
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
    _barrier()
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=temp)
    _save(rng_state(), temp / f"rng-{rank}.pt")
    if rank == 0:
        _save(extra, temp / "state.pt")
    _barrier()
    if rank == 0:
        _publish(temp, final, directory)
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
    model_state, optim_state = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(
        model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )
    rng_path = path / f"rng-{rank}.pt"
    if rng_path.is_file():
        restore_rng(torch.load(rng_path, weights_only=False))
    return torch.load(path / "state.pt", map_location="cpu", weights_only=False)


def save_best(directory: Path, model: torch.nn.Module, rank: int, extra: dict) -> None:
    """Collective: keep the model weights of the best evaluation so far (atomically)."""
    final, temp = directory / "model", directory / ".tmp-model"
    if rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
    _barrier()
    dcp.save({"model": get_model_state_dict(model)}, checkpoint_id=temp)
    if rank == 0:
        _save(extra, temp / "extra.pt")
    _barrier()
    if rank == 0:
        _publish(temp, final, directory)
    _barrier()


def best_exists(directory: Path) -> bool:
    return (directory / "model" / "extra.pt").is_file()


def load_best(directory: Path, model: torch.nn.Module) -> dict:
    """Collective: load the weights `save_best` kept; returns the extras."""
    state = {"model": get_model_state_dict(model)}
    dcp.load(state, checkpoint_id=directory / "model")
    set_model_state_dict(model, state["model"])
    return torch.load(directory / "model" / "extra.pt", weights_only=False)


def full_model_state(model: torch.nn.Module) -> dict:
    """Collective: the full (unsharded) model state on rank 0's CPU."""
    return get_model_state_dict(model, options=FULL)
