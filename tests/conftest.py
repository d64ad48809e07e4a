"""Fixtures every suite can use. Suite-specific ones live in tests/<area>/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.suite.redis import RedisProcess


@pytest.fixture
def redis_server(tmp_path_factory) -> Iterator[RedisProcess]:
    """A fresh real Redis server for one test (kill()/start() to simulate an outage)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
