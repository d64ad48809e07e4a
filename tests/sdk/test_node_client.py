"""Another language: a Node.js client (@grpc/grpc-js + @grpc/proto-loader, loading
protos/ directly) calls the real gateway with a bearer token and gets a generation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.sdk.real_stack import MODEL

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="module")
def node_client() -> list[str]:
    """`npm ci` from the committed lock file, once (node_modules is kept between runs)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node and npm, "Node.js (>= 18) and npm are needed for the cross-language test"
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            check=True,
            timeout=300,
        )
    return [node, str(NODE_DIR / "client.js")]


def _run(node_client, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*node_client, *args], capture_output=True, text=True, timeout=60, cwd=NODE_DIR
    )


def test_node_client_gets_a_generation_through_the_gateway(stack, node_client):
    import lattice

    with lattice.Client(stack.gateway, stack.token) as client:
        expected = client.generate(MODEL, "Once upon a time", max_new_tokens=6)
    auth = ("--target", stack.gateway, "--token", stack.token, "--model", MODEL)
    result = _run(node_client, *auth, "--prompt", "Once upon a time", "--max-new-tokens", "6")
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["text"] == expected.text  # greedy decoding: the same answer in any language
    assert response["model_name"] == MODEL and response["model_version"] == "1"
    assert response["finish_reason"].startswith("FINISH_REASON_")
    assert response["usage"]["completion_tokens"] == expected.usage.completion_tokens


def test_node_client_streams(stack, node_client):
    auth = ("--target", stack.gateway, "--token", stack.token, "--model", MODEL)
    result = _run(node_client, *auth, "--prompt", "Hello", "--max-new-tokens", "4", "--stream")
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert messages[0]["model_name"] == MODEL
    assert messages[-1]["finish_reason"] != "FINISH_REASON_UNSPECIFIED"


def test_node_client_without_a_token_is_unauthenticated(stack, node_client):
    result = _run(node_client, "--target", stack.gateway, "--model", MODEL, "--prompt", "hi")
    assert result.returncode == 1
    error = json.loads(result.stderr)
    assert error["name"] == "UNAUTHENTICATED" and error["code"] == 16
