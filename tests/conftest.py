"""Fixtures every suite can use. Suite-specific ones live in tests/<area>/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.inference.decode_process import PRELOAD as DECODE_PROCESS_PRELOAD
from services.runtime import forkserver
from services.suite.redis import RedisProcess
from services.suite.redis_ha import ClusterGroup, SentinelGroup
from services.trainer.jobs.process import PRELOAD as JOB_PRELOAD

# The test process hosts every service at once, and a process has one
# forkserver: it preloads what the children of each service need, whichever
# service starts it first.
forkserver.context((*DECODE_PROCESS_PRELOAD, *JOB_PRELOAD))


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
