"""The CLI's hints for the two usual first failures: no suite running, and no token."""

from __future__ import annotations

from click.testing import CliRunner

from lattice.cli import main
from services.suite.ports import free_port


def test_a_closed_port_says_to_start_a_suite(monkeypatch):
    monkeypatch.delenv("LATTICE_TOKEN", raising=False)
    target = f"127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        main, ["models", "list", "--target", target, "--token", "t", "--timeout", "2"]
    )
    assert result.exit_code == 1
    assert f"no Lattice suite at {target}" in result.output
    assert "lattice up" in result.output
    assert "Traceback" not in result.output


def test_a_missing_token_says_how_to_get_one(cli):
    result = cli("generate", "tiny", "hi", ok=False, LATTICE_TOKEN="")
    assert "set LATTICE_TOKEN" in result.stderr
    assert "lattice token --help" in result.stderr
