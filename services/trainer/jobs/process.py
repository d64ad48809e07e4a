"""One torchrun process group per job attempt.

The agent (`services.trainer.worker.launch`, torchrun with forked ranks)
runs in its own session (`start_new_session=True`). For a multi-node job,
`local_nodes` runs one agent per node. Every process of a job carries the job
id in its environment (`LATTICE_TRAINER_JOB_ID`, inherited by the workers), so
none is missed, whichever session it runs in.
Stopping sends SIGTERM to the agent (which forwards it to its workers), then
SIGKILL to every process carrying the tag after a grace period. Processes
left behind by a killed service are found by the same tag and killed when it
starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

WORKER_MODULE = "services.trainer.worker"
#: torchrun with ranks forked from a preloaded agent (`services.trainer.worker.launch`).
LAUNCHER = "services.trainer.worker.launch"


def torchrun_argv(
    nproc: int,
    job_dir: Path,
    extra: Sequence[str] = (),
    python: str = sys.executable,
    module: str = WORKER_MODULE,
    nodes: int = 1,
    job_id: str = "",
) -> list[str]:
    """One standalone torchrun; or, for `nodes` > 1, one agent per node meeting by
    c10d rendezvous on a free loopback port (see `local_nodes`)."""
    if nodes > 1:
        launcher = [
            python,
            "-m",
            "services.trainer.jobs.local_nodes",
            "--nodes",
            str(nodes),
            "--port",
            str(_free_port()),
            "--job-id",
            job_id,
            "--",
        ]
    else:
        launcher = [python, "-m", LAUNCHER, "--standalone"]
    return [
        *launcher,
        "--nproc-per-node",
        str(nproc),
        "--max-restarts",
        "0",
        *extra,
        "-m",
        module,
        "--job-dir",
        str(job_dir),
    ]


JOB_ENV = "LATTICE_TRAINER_JOB_ID"


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tagged_processes(job_id: str) -> list[psutil.Process]:
    """Every live process started for `job_id` (torchrun and its workers)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(JOB_ENV) == job_id:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    return found


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


class ProcessGroup:
    def __init__(self, process: asyncio.subprocess.Process, job_id: str) -> None:
        self.job_id = job_id
        self.process = process
        self.pgid = process.pid
        self.started = psutil.Process(process.pid).create_time()
        self.label = f"process group {self.pgid}"

    @classmethod
    async def launch(
        cls, job_id: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> ProcessGroup:
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, JOB_ENV: job_id},
                cwd=cwd,
                start_new_session=True,
            )
        return cls(process, job_id)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    async def wait(self) -> int:
        return await self.process.wait()

    async def stop(self, grace: float) -> int:
        """SIGTERM torchrun's group, SIGKILL every process of the job after `grace` seconds."""
        self.signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            code = None
        # torchrun may exit before its workers do, or hang: nothing of the job survives.
        await asyncio.to_thread(kill_all, tagged_processes(self.job_id))
        return code if code is not None else await self.process.wait()

    def worker_pids(self) -> list[int]:
        try:
            return [p.pid for p in psutil.Process(self.pgid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def kill_stale(job_id: str) -> bool:
    """Kill what a previous service process left running for `job_id`."""
    processes = tagged_processes(job_id)
    kill_all(processes)
    return bool(processes)
