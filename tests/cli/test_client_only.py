"""On a client-only install, the CLI works and the server commands say what to install.

The server packages are hidden from a child interpreter by a meta-path finder
that refuses them, as they are absent after `pip install lattice-llm`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

SERVER_ONLY = (
    *("torch", "transformers", "grpc_reflection", "opentelemetry", "prometheus_client"),
    *("redis", "starlette", "uvicorn", "services"),
)

PRELUDE = f"""
import sys

class ClientOnly:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {SERVER_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, ClientOnly())
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = PRELUDE + (
        f"from lattice.cli import main\nsys.argv = ['lattice', *{list(args)!r}]\nmain()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_client_package_imports_without_server_packages():
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + "import lattice, lattice.cli; print('ok')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_help_lists_every_command():
    result = _cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("up", "demo", "keys", "serve", "generate", "models"):
        assert f"  {command} " in result.stdout


@pytest.mark.parametrize("args", [("up",), ("demo",), ("serve", "gateway"), ("up", "--tls")])
def test_server_commands_exit_once_with_the_install_hint(args):
    result = _cli(*args)
    assert result.returncode == 1
    assert "pip install 'lattice-llm[ml]'" in result.stderr
    assert "Traceback" not in result.stderr
    assert "torch" in result.stderr  # names what is missing
