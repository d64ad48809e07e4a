"""The dependency rule, checked on every import statement in the tree.

    contract (lattice.v1, errors, refs, artifacts, routing, tokens)
      -> SDK (lattice, lattice._*) and shared runtime (services.runtime)
      -> the four services (services.<name>)
      -> CLI (lattice.cli) and dev supervisor (services.suite)

No arrow points back up. Function-local imports count too, so a cycle
cannot be hidden inside a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = (
    *("lattice.v1", "lattice.errors", "lattice.refs"),
    *("lattice.artifacts", "lattice.routing", "lattice.tokens"),
)
SERVICES = ("gateway", "registry", "trainer", "inference")
MODEL_STACK = ("torch", "transformers", "tokenizers", "tritonclient", "gensim")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, imported module) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # `from lattice import errors` imports lattice.errors
                yield node.lineno, f"{node.module}.{alias.name}"


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _layer(module: str) -> str:
    if _within(module, *CONTRACT):
        return "contract"
    if _within(module, "lattice.cli"):
        return "cli"
    if module == "lattice" or module.startswith("lattice._"):
        return "sdk"
    if _within(module, "services.runtime"):
        return "runtime"
    if _within(module, "services.suite"):
        return "suite"
    for name in SERVICES:
        if _within(module, f"services.{name}"):
            return f"service:{name}"
    if _within(module, "bench"):
        return "bench"
    return "other"


def _violation(importer: str, imported: str) -> str | None:
    """Why `importer` may not import `imported`, or None when it may."""
    layer = _layer(importer)
    target = _layer(imported)
    private_sdk = imported.startswith("lattice._")
    if layer == "contract" and target not in ("contract", "other"):
        return "the contract layer imports nothing of Lattice above it"
    if layer in ("sdk", "cli") and _within(imported, "services", *MODEL_STACK):
        return "the client package never imports services or the model stack"
    if layer == "sdk" and target == "cli":
        return "the SDK does not import the CLI"
    if layer == "runtime" and target.startswith(("service:", "suite", "sdk", "cli")):
        return "the shared runtime imports only the contract"
    if layer.startswith("service:"):
        if target.startswith("service:") and target != layer:
            return "a service never imports another service"
        if target in ("sdk", "cli", "suite"):
            return "services import only the contract and the runtime"
    if layer == "suite" and private_sdk:
        return "the dev supervisor uses the SDK's public names only"
    if layer == "bench" and _within(imported, "tests"):
        return "bench/ imports installed packages and its own helpers, not tests"
    return None


def _python_files() -> Iterator[Path]:
    for top in ("lattice", "services", "bench"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                yield path


def test_every_import_follows_the_layers():
    violations = [
        f"{path.relative_to(ROOT)}:{line}: imports {imported}: {reason}"
        for path in _python_files()
        for line, imported in _imports(path)
        if (reason := _violation(_module_name(path), imported))
    ]
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("lattice.errors", "lattice._client"),
        ("lattice._client", "services.gateway.gateway"),
        ("lattice.cli._commands.generate", "torch"),
        ("services.runtime.server", "services.gateway.auth"),
        ("services.gateway.gateway", "services.inference.cache"),
        ("services.registry.registry", "lattice._errors"),
        ("services.suite.up", "lattice._client"),
        ("bench.inference_cache", "tests.support.sdk_servers"),
    ],
)
def test_the_rule_catches_each_kind_of_violation(importer, imported):
    assert _violation(importer, imported)


def test_allowed_directions_pass():
    for importer, imported in [
        ("services.gateway.gateway", "lattice.errors"),
        ("services.inference.manager", "lattice.routing"),
        ("services.suite.up", "lattice"),
        ("lattice.cli._commands.generate", "lattice._client"),
        ("services.trainer.server", "services.runtime.server"),
    ]:
        assert _violation(importer, imported) is None
