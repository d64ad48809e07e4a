"""The `triton_factory` fixture: local CPU Triton servers (services.suite.triton), stopped
at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from services.suite.triton import TritonProcess


@pytest.fixture
def triton_factory(tmp_path_factory) -> Iterator[Callable[..., TritonProcess]]:
    """Fixture: `start(model_repository, wait_models=[...], **TritonProcess kwargs)`
    returns a ready server; all are stopped at teardown. Import it into a
    conftest (`from tests.support.triton_server import triton_factory`) to use it."""
    servers: list[TritonProcess] = []

    def start(model_repository: Path, *, wait_models: Sequence[str] = (), **kwargs):
        server = TritonProcess(model_repository, tmp_path_factory.mktemp("triton"), **kwargs)
        servers.append(server)
        return server.start(wait_models=wait_models)

    yield start
    for server in servers:
        server.stop()
