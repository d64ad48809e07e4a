"""One set of servers per module, and a helper that runs `python -m lattice.cli`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sdk_servers import TEST_TOKEN, LatticeServices, running_services

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[LatticeServices]:
    data_dir = tmp_path_factory.mktemp("services")
    yield from running_services(data_dir, token=TEST_TOKEN, stream_delay=0.02)


class Cli:
    """Runs the real `lattice` command in a subprocess against `target`."""

    def __init__(self, target: str, token: str | None, cwd: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LATTICE_")}
        self.env["LATTICE_TARGET"] = target
        if token:
            self.env["LATTICE_TOKEN"] = token
        self.env["PYTHONPATH"] = str(ROOT)
        self.cwd = cwd

    def __call__(
        self, *args: str, ok: bool = True, usage: bool = False, **env: str
    ) -> subprocess.CompletedProcess:
        """ok: exit 0; else a failure: a one-line error and exit 1, or (usage=True)
        click's usage message and exit 2."""
        result = subprocess.run(
            [sys.executable, "-m", "lattice.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.cwd,
            env={**self.env, **env},
        )
        if usage:
            assert result.returncode == 2, f"{args}: {result.stderr}"
            assert result.stderr.startswith("Usage:") and "Traceback" not in result.stderr
        elif ok:
            assert result.returncode == 0, f"{args}: {result.stderr}"
        else:
            assert result.returncode == 1, f"{args}: exit {result.returncode}: {result.stderr}"
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, f"expected a one-line error, got: {result.stderr}"
            assert "Traceback" not in result.stderr
        return result

    def json(self, *args: str) -> object:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def cli(services, tmp_path) -> Cli:
    """`lattice` against the scripted inference and trainer."""
    return Cli(services.address, TEST_TOKEN, tmp_path)


@pytest.fixture
def registry_cli(services, tmp_path) -> Cli:
    """`lattice` against the real registry, as the tenant `REGISTRY_CALLER`."""
    return Cli(services.registry_address, services.registry_token(), tmp_path)
