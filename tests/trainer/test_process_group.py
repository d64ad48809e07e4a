"""An attempt's process group: started, stopped, and found again by the group its
job directory records."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from services.trainer.jobs.process import (
    GROUP_FILE,
    ProcessGroup,
    kill_stale,
    record_group,
    recorded_group,
)

# A leader that forks a second member of its group, then both sleep.
GROUP_OF_TWO = [sys.executable, "-c", "import os, time; os.fork(); time.sleep(60)"]


@pytest.fixture
def leader() -> Iterator[subprocess.Popen]:
    """The leader of a session and process group of two."""
    process = subprocess.Popen(GROUP_OF_TWO, start_new_session=True)
    deadline = time.monotonic() + 10
    while len(psutil.Process(process.pid).children()) < 1:
        assert time.monotonic() < deadline, "the leader did not fork"
        time.sleep(0.01)
    yield process
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_the_recorded_group_is_found_and_killed_whole(tmp_path, leader):
    record_group(tmp_path, leader.pid, psutil.Process(leader.pid).create_time())
    members = recorded_group(tmp_path)
    assert len(members) == 2 and leader.pid in {p.pid for p in members}
    assert kill_stale("job-without-tagged-processes", tmp_path)
    assert recorded_group(tmp_path) == []
    assert not any(p.is_running() for p in members)


def test_a_group_id_reused_since_the_attempt_is_not_the_jobs(tmp_path, leader):
    later = psutil.Process(leader.pid).create_time() + 60  # the job's leader was younger
    record_group(tmp_path, leader.pid, later)
    assert recorded_group(tmp_path) == []
    assert not kill_stale("job-without-tagged-processes", tmp_path)
    assert leader.poll() is None


def test_a_missing_or_damaged_record_finds_nothing(tmp_path):
    assert recorded_group(tmp_path) == []
    (tmp_path / GROUP_FILE).write_text("{not json")
    assert recorded_group(tmp_path) == []
    assert not kill_stale("job-never-started", tmp_path)


# An attempt that runs until it is stopped, and is idle meanwhile.
FOREVER = [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1"]


def _in(directory) -> list[psutil.Process]:
    """Live processes whose working directory is `directory` (an attempt's)."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if process.status() != psutil.STATUS_ZOMBIE and process.cwd() == str(directory):
                found.append(process)
    return found


async def test_an_attempt_cancelled_while_it_starts_is_killed_not_left_running(tmp_path):
    # A warm forkserver first, so that the start below is under way when cancelled.
    quick = [sys.executable, "-m", "this"]
    warm = await ProcessGroup.launch("job-warm", quick, dict(os.environ), tmp_path / "w", tmp_path)
    assert await warm.wait() == 0
    launch = asyncio.create_task(
        ProcessGroup.launch("job-cancelled", FOREVER, dict(os.environ), tmp_path / "log", tmp_path)
    )
    await asyncio.sleep(0)  # starting: the forkserver is asked for the process
    launch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await launch
    await asyncio.sleep(1.5)  # long enough for a started attempt to be in its cwd
    leftovers = _in(tmp_path)
    for process in leftovers:
        process.kill()
    assert leftovers == []


async def test_a_running_attempt_is_not_joined_at_interpreter_exit(tmp_path):
    group = await ProcessGroup.launch(
        "job-alive", FOREVER, dict(os.environ), tmp_path / "log", tmp_path
    )
    try:
        # multiprocessing joins its live children at exit; an attempt outlives
        # its service by design, so the service would hang there instead.
        assert group.pgid not in {p.pid for p in multiprocessing.active_children()}
        deadline = time.monotonic() + 10
        while [p.pid for p in _in(tmp_path)] != [group.pgid]:  # until it is in its cwd
            assert time.monotonic() < deadline, _in(tmp_path)
            await asyncio.sleep(0.01)
    finally:
        assert await group.stop(grace=5) != 0
    assert _in(tmp_path) == []
