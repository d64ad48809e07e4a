"""Fixtures every suite can use. Suite-specific ones live in tests/<area>/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.suite.redis import RedisProcess
from services.suite.redis_ha import ClusterGroup, SentinelGroup


@pytest.fixture
def redis_server(tmp_path_factory) -> Iterator[RedisProcess]:
    """A fresh real Redis server for one test (kill()/start() to simulate an outage)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[ClusterGroup]:
    """A real three-primary Redis Cluster, shared by the session (tests use their own keys)."""
    cluster = ClusterGroup(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_sentinel(tmp_path_factory) -> Iterator[SentinelGroup]:
    """A fresh primary, replica and sentinel for one test (it may fail them over)."""
    group = SentinelGroup(tmp_path_factory.mktemp("redis-sentinel")).start()
    yield group
    group.stop()
