"""Finding an attempt's processes by the process group its job directory records."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from services.trainer.jobs.process import GROUP_FILE, kill_stale, record_group, recorded_group

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
