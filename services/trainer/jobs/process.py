"""One torchrun process group per job attempt, in its own session.

The group is started with `start_new_session=True`, so its id is the torchrun
pid and signals reach torchrun and every worker at once. Stopping sends
SIGTERM to the group, then SIGKILL after a grace period. A group left behind
by a killed service is recognised by (pgid, start time) and killed on restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil


def torchrun_argv(
    nproc: int, job_dir: Path, extra: Sequence[str] = (), python: str = sys.executable
) -> list[str]:
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(nproc),
        "--standalone",
        "--max-restarts",
        "0",
        *extra,
        "-m",
        "services.trainer.worker",
        "--job-dir",
        str(job_dir),
    ]


class ProcessGroup:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pgid = process.pid
        self.started = psutil.Process(process.pid).create_time()

    @classmethod
    async def launch(
        cls, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> ProcessGroup:
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        return cls(process)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    async def wait(self) -> int:
        return await self.process.wait()

    async def stop(self, grace: float) -> int:
        """SIGTERM the whole group, SIGKILL what is left after `grace` seconds."""
        self.signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            code = None
        self.signal(signal.SIGKILL)  # torchrun may exit before its workers do
        return code if code is not None else await self.process.wait()

    def worker_pids(self) -> list[int]:
        try:
            return [p.pid for p in psutil.Process(self.pgid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def kill_stale_group(pgid: int, started: float) -> bool:
    """Kill a group left by a previous service process, if it is still that group."""
    if pgid <= 0:
        return False
    members = []
    for process in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["create_time"] >= started - 1:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    if not members:
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    psutil.wait_procs(members, timeout=10)
    return True
