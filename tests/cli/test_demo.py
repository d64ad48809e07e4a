"""`lattice demo` end to end, with fewer steps: every stage must visibly happen."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from services.suite.ports import free_port

pytestmark = pytest.mark.slow


def test_demo_trains_registers_streams_and_hits_the_cache(tmp_path):
    argv = [
        sys.executable,
        "-m",
        "lattice.cli",
        "demo",
        "--steps",
        "12",
        "--data-dir",
        str(tmp_path),
        "--redis-port",
        str(free_port()),
        "--http-port",
        str(free_port()),
    ]
    for name in ("gateway", "registry", "inference", "trainer"):
        argv += [f"--{name}-port", str(free_port())]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=400)
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[1/6] suite started" in out
    assert re.search(r"registered starter-gpt:1 and put it online", out)
    assert re.search(r"served by starter-gpt:1; first token after \d+ ms", out)
    assert "cached=True" in out and "same text: True" in out
    trace = re.search(r"trace id of these requests: ([0-9a-f]{32})", out)
    assert trace is not None
    # the services ran with their logs in the data directory, and carried our trace id
    gateway_log = (tmp_path / "logs" / "gateway.log").read_text()
    assert trace.group(1) in gateway_log
    assert "job" in done.stderr and "succeeded" in done.stderr
