"""One process group per job attempt.

The attempt's agent (`services.trainer.worker.launch`: torchrun, with ranks
forked from it) is forked from this process's forkserver, which imported
torch, transformers and the training program once: an attempt starts in a
fraction of a second instead of ~3.7 s of imports. The agent leads a session
and process group of its own, its ranks are forked into that group, and for
a multi-node job `local_nodes` runs one agent per node in it too.

Stopping sends SIGTERM to the group, then SIGKILL after a grace period. The
group id is recorded in the job directory, so that a restarted service finds
and kills what a killed one left behind. Processes also carry the job id in
their environment (`LATTICE_TRAINER_JOB_ID`) where they were exec'd (another
interpreter, `local_nodes`' agents): a forked process keeps the
forkserver's environment, so the recorded group is what finds those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing.process
import os
import runpy
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TypeVar

import psutil

from services.runtime import forkserver
from services.trainer.jobs.rendezvous import LAUNCHER

WORKER_MODULE = "services.trainer.worker"
#: What the forkserver imports once, so that an attempt's agent starts without
#: them (`python -X importtime -c "import services.trainer.worker.train"`).
PRELOAD = (LAUNCHER, "services.trainer.worker.train")

T = TypeVar("T")


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


def tagged_processes(job_id: str, job_dir: Path | None = None) -> list[psutil.Process]:
    """Every live process started for `job_id`: those carrying its tag, and the
    members of the process group recorded in `job_dir` (an agent forked by the
    forkserver keeps the forkserver's environment, so it carries no tag)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(JOB_ENV) == job_id:
                found.append(process)
        except (psutil.Error, OSError):
            continue
    if job_dir is not None:
        found += [p for p in recorded_group(job_dir) if p not in found]
    return found


GROUP_FILE = "process-group.json"


def record_group(job_dir: Path, pgid: int, started: float) -> None:
    """Note the attempt's process group, for a restarted service to find it."""
    (job_dir / GROUP_FILE).write_text(json.dumps({"pgid": pgid, "started": started}))


def recorded_group(job_dir: Path) -> list[psutil.Process]:
    """Live members of the recorded process group, started no earlier than its
    leader (so a group id reused since is not mistaken for the job's)."""
    try:
        record = json.loads((job_dir / GROUP_FILE).read_text())
        pgid, started = int(record["pgid"]), float(record["started"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.create_time() >= started:
                members.append(process)
        except (psutil.Error, OSError):
            continue
    return members


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=10)


def _run_attempt(argv: list[str], env: dict[str, str], log_path: str, cwd: str) -> None:
    """In a process forked by the forkserver: become what `argv` would exec
    (`python -m MODULE ARGS`), in a session of its own, writing to the log."""
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.close(nothing)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    module, args = argv[2], argv[3:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _forkable(argv: Sequence[str]) -> bool:
    """`argv` runs a module in this interpreter, which the forkserver can become."""
    return len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m"


class ProcessGroup:
    """One attempt's processes: the agent leads a session (and process group)
    of its own, and its ranks are forked into it."""

    def __init__(self, pid: int, exited: asyncio.Future[int], job_id: str) -> None:
        self.job_id = job_id
        self.pgid = pid
        self._exited = exited
        self.started = psutil.Process(pid).create_time()
        self.label = f"process group {self.pgid}"

    @classmethod
    async def launch(
        cls, job_id: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path
    ) -> ProcessGroup:
        """Start `argv` forked from the forkserver, which already imported torch,
        transformers and the training program (~3.7 s of CPU per attempt
        otherwise); or, for another interpreter, exec it."""
        env = {**env, JOB_ENV: job_id}
        if _forkable(argv):
            process = forkserver.context(PRELOAD).Process(
                target=_run_attempt,
                args=(list(argv), env, str(log_path), str(cwd)),
                name=f"job-{job_id}",
                daemon=False,  # a daemonic process may not fork ranks
            )
            await _started(asyncio.to_thread(process.start), lambda: process.pid)
            # An attempt outlives this service by design (a restarted service finds
            # and resumes it): multiprocessing must not join it at interpreter exit.
            multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
            assert process.pid is not None
            return cls(process.pid, _exit_status(process), job_id)
        with log_path.open("ab") as log:
            started = asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
            child = await _started(started, lambda: None)
        return cls(child.pid, asyncio.ensure_future(child.wait()), job_id)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    async def stop(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL every process of the job after `grace` seconds."""
        self.signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.wait(), grace)
        except TimeoutError:
            code = None
        # The agent may exit before its workers do, or hang: nothing of the job survives.
        self.signal(signal.SIGKILL)
        await asyncio.to_thread(kill_all, tagged_processes(self.job_id))
        return code if code is not None else await self.wait()

    def worker_pids(self) -> list[int]:
        try:
            return [p.pid for p in psutil.Process(self.pgid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


async def _started(starting: Awaitable[T], pid: Callable[[], int | None]) -> T:
    """Finish starting even when the caller is cancelled meanwhile (a job
    cancelled as its attempt starts), then kill what started: else the
    attempt would run on, owned by nobody."""
    start = asyncio.ensure_future(starting)
    try:
        return await asyncio.shield(start)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            result = await start
            leader = pid() or getattr(result, "pid", None)
            if leader:
                # The leader first: once it is gone no rank can be forked; then
                # the ranks it forked into its group, if it got that far.
                for kill in (os.kill, os.killpg):
                    with contextlib.suppress(OSError):
                        kill(leader, signal.SIGKILL)
        raise


def _exit_status(process: BaseProcess) -> asyncio.Future[int]:
    """A future for the forked process's exit status (negative: the signal that
    ended it), resolved when the forkserver reports it on the sentinel."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[int] = loop.create_future()

    def reap() -> None:
        loop.remove_reader(process.sentinel)
        process.join()
        if not exited.done():
            exited.set_result(process.exitcode if process.exitcode is not None else -1)

    loop.add_reader(process.sentinel, reap)
    return exited


def kill_stale(job_id: str, job_dir: Path | None = None) -> bool:
    """Kill what a previous service process left running for `job_id`."""
    processes = tagged_processes(job_id, job_dir)
    kill_all(processes)
    return bool(processes)
