"""The public surface stays small, and the package never pulls in torch."""

from __future__ import annotations

import subprocess
import sys

import lattice


def test_exported_names_are_exactly_the_public_api():
    assert sorted(lattice.__all__) == sorted(
        [
            "Client",
            "AsyncClient",
            "Stream",
            "AsyncStream",
            "Generation",
            "GenerationDelta",
            "Embeddings",
            "SimilarWords",
            "Classifications",
            "Usage",
            "LatticeError",
            "InvalidArgument",
            "NotFound",
            "AlreadyExists",
            "FailedPrecondition",
            "Aborted",
            "Unauthenticated",
            "PermissionDenied",
            "ResourceExhausted",
            "Unavailable",
            "DeadlineExceeded",
            "Cancelled",
            "Unimplemented",
            "Internal",
        ]
    )
    for name in lattice.__all__:
        assert getattr(lattice, name) is not None
    public = {n for n in dir(lattice) if not n.startswith("_")}
    contract = {"v1", "errors", "refs", "artifacts", "routing", "tokens"}
    assert public - set(lattice.__all__) <= contract | {"cli", "annotations"}


def test_sdk_and_cli_import_without_torch():
    code = (
        "import sys, lattice, lattice.cli; "
        "lattice.Client('127.0.0.1:1').close(); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'transformers' not in sys.modules, 'transformers imported'; "
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
