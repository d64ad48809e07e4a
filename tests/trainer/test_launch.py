"""The job launcher: torchrun's agent, with ranks forked from a preloaded agent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.trainer.jobs.rendezvous import LAUNCHER
from services.trainer.worker.launch import module_file


def test_module_file_is_what_python_dash_m_runs():
    assert module_file("services.trainer.worker") == str(
        Path("services/trainer/worker/__main__.py").resolve()
    )
    assert module_file("tests.trainer.faulty_worker").endswith("tests/trainer/faulty_worker.py")
    with pytest.raises(SystemExit, match="no module named lattice_missing"):
        module_file("lattice_missing")


def test_ranks_fork_from_the_preloaded_agent_with_torchruns_thread_count(tmp_path):
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            LAUNCHER,
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "0",
            "-m",
            "tests.trainer.rank_probe",
            "--out",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output, _ = agent.communicate(timeout=120)
    assert agent.returncode == 0, output
    reports = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    # Forked by the agent itself (torchrun spawns a fresh interpreter per rank)...
    assert {r["parent"] for r in reports} == {agent.pid}
    # ...after it imported the module, so a rank starts without importing again...
    assert all(r["preloaded"] for r in reports)
    # ...with the one thread per rank torchrun sets for several ranks per node,
    # though OpenMP read its environment before torchrun set it.
    assert [r["threads"] for r in reports] == [1, 1]


def test_a_failing_rank_fails_the_launch(tmp_path):
    agent = subprocess.run(
        [
            sys.executable,
            "-m",
            LAUNCHER,
            "--standalone",
            "--nproc-per-node",
            "1",
            "-m",
            "tests.trainer.rank_probe",
            "--out",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert agent.returncode != 0
    assert "FileNotFoundError" in agent.stderr + agent.stdout
