"""Where a job attempt runs: torchrun on this host, or a PyTorchJob on a cluster.

The runner supervises both the same way (trainer setting `launcher`): it
writes the job directory, launches an attempt, tails the events the workers
write there, waits for the attempt to end, and starts the next attempt from
the last checkpoint when one fails. A launcher answers three things: how to
start an attempt, what a job may ask for (its limits), and how to clear what
an earlier trainer process left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from lattice.errors import FailedPrecondition
from lattice.v1 import trainer_pb2
from services.trainer.jobs.kube import PyTorchJobs
from services.trainer.jobs.process import ProcessGroup, kill_stale, record_group, torchrun_argv
from services.trainer.jobs.pytorchjob import ClusterJob, ClusterPolicy, job_label, render
from services.trainer.jobs.validation import MachineLimits

LOCAL, PYTORCHJOB = "local", "pytorchjob"
CHOICES = (LOCAL, PYTORCHJOB)


class Attempt(Protocol):
    """One running attempt of a job."""

    #: The local process group id (0 when nothing runs on this host).
    pgid: int
    started: float
    #: What the job's log calls it ("process group 123", "PyTorchJob lattice-...").
    label: str

    async def wait(self) -> int:
        """The exit status: 0 when every rank finished."""
        ...

    async def stop(self, grace: float) -> int: ...

    def worker_pids(self) -> list[int]: ...


class Launcher(Protocol):
    limits: MachineLimits

    async def launch(self, job: trainer_pb2.Job, job_dir: Path, log_path: Path) -> Attempt: ...

    async def clean_stale(self, job_id: str) -> bool:
        """Stop what an earlier trainer process left running for the job."""
        ...


@dataclasses.dataclass
class LocalLauncher:
    """torchrun on this host (several agents on loopback for `nodes` > 1)."""

    limits: MachineLimits
    environment: Callable[[], Mapping[str, str]]
    torchrun_args: Sequence[str] = ()
    python: str = ""
    worker_module: str = ""
    #: Where each job's directory is (its recorded process group, for `clean_stale`).
    jobs_dir: Path | None = None

    async def launch(self, job: trainer_pb2.Job, job_dir: Path, log_path: Path) -> Attempt:
        argv = torchrun_argv(
            job.spec.distributed.processes_per_node,
            job_dir,
            self.torchrun_args,
            self.python,
            self.worker_module,
            job.spec.distributed.nodes,
            job.id,
        )
        group = await ProcessGroup.launch(job.id, argv, self.environment(), log_path, job_dir)
        record_group(job_dir, group.pgid, group.started)
        return group

    async def clean_stale(self, job_id: str) -> bool:
        job_dir = self.jobs_dir / job_id if self.jobs_dir is not None else None
        return await asyncio.to_thread(kill_stale, job_id, job_dir)


class PyTorchJobLauncher:
    """One Kubeflow PyTorchJob per attempt, created, watched and deleted through
    the Kubernetes API; the pods share the job directory with the trainer."""

    def __init__(self, jobs: PyTorchJobs, policy: ClusterPolicy, limits: MachineLimits) -> None:
        self.jobs, self.policy, self.limits = jobs, policy, limits

    async def launch(self, job: trainer_pb2.Job, job_dir: Path, log_path: Path) -> Attempt:
        dist = job.spec.distributed
        nccl = dist.backend == trainer_pb2.DISTRIBUTED_BACKEND_NCCL
        attempt = ClusterJob(
            job_id=job.id,
            job_dir=str(job_dir),  # absolute: under the shared volume's mount
            attempt=job.attempts,
            nodes=dist.nodes,
            processes_per_node=dist.processes_per_node,
            gpus_per_node=dist.processes_per_node if nccl else 0,
        )
        try:
            obj = render(attempt, self.policy)
        except ValueError as error:
            raise FailedPrecondition(f"cannot run the job as a PyTorchJob: {error}") from None
        name = obj["metadata"]["name"]
        creating = asyncio.ensure_future(asyncio.to_thread(self.jobs.create, obj))
        try:
            await asyncio.shield(creating)
        except asyncio.CancelledError:
            # Cancelled mid-create: the API call lands anyway, so delete what it made
            # rather than leave pods running for a job that is already cancelled.
            with contextlib.suppress(Exception):
                await creating
                await asyncio.to_thread(self.jobs.delete, name)
            raise
        running = RunningPyTorchJob(self.jobs, name, log_path)
        running.note(
            f"created in namespace {self.jobs.namespace}: {dist.nodes} node(s) x "
            f"{dist.processes_per_node} process(es)"
        )
        return running

    async def clean_stale(self, job_id: str) -> bool:
        names = await asyncio.to_thread(self.jobs.names_for, job_label(job_id))
        for name in names:
            await asyncio.to_thread(self.jobs.delete, name)
        return bool(names)


class RunningPyTorchJob:
    """A submitted attempt. Its status changes go to the attempt's log, which the
    runner streams to WatchJob like torchrun's output."""

    pgid = 0

    def __init__(self, jobs: PyTorchJobs, name: str, log_path: Path) -> None:
        self.jobs, self.name, self.log_path = jobs, name, log_path
        self.started = time.time()
        self.label = f"PyTorchJob {name}"
        self._stopping = threading.Event()

    def note(self, line: str) -> None:
        with self.log_path.open("a") as log:
            log.write(f"{self.label}: {line}\n")

    def _changed(self, conditions: list[dict]) -> None:
        if conditions:
            latest = conditions[-1]
            reason = f" ({latest['message']})" if latest.get("message") else ""
            self.note(f"{latest.get('type', '?')}{reason}")

    async def wait(self) -> int:
        outcome = await asyncio.to_thread(self.jobs.wait, self.name, self._stopping, self._changed)
        if outcome.state == "Succeeded":
            return 0
        if outcome.state == "Failed":
            self.note(f"failed: {outcome.message or 'no reason given'}")
            return 1
        self.note("deleted")
        return -15

    async def stop(self, grace: float) -> int:
        """Delete the PyTorchJob (its pods go with it); the watch then ends."""
        self._stopping.set()
        await asyncio.to_thread(self.jobs.delete, self.name)
        return -15

    def worker_pids(self) -> list[int]:
        return []
