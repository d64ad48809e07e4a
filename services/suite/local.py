"""The whole suite on one machine: four services and a Redis, all supervised.

`lattice up` and `lattice demo` both start it through `LocalSuite`, so the
two never disagree about ports, environment or shutdown order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import redis
import redis.asyncio

from lattice.tokens import DEV_CA_FILE, DEV_SECRET_FILE
from services.runtime.keys import DEFAULT_KEY_RING_PATH, create_key_ring
from services.runtime.pki import CertFiles, ensure_dev_pki
from services.suite.redis import redis_binary
from services.suite.supervisor import ChildSpec, Supervisor, service_argv

SERVICE_ORDER = ("registry", "inference", "trainer", "gateway")
#: Internal services: with --tls they accept only callers holding a suite certificate.
INTERNAL_SERVICES = ("registry", "inference", "trainer")
#: The certificate `lattice up` itself presents (health checks).
SUPERVISOR = "supervisor"

#: The tenant a developer's `lattice token` acts for by default: it owns the starter
#: model and whatever a data directory held before resources had owners.
LOCAL_TENANT = "dev"


def dev_secret(data_dir: Path) -> str:
    """The development HMAC secret for tokens, created once per data directory."""
    path = data_dir / DEV_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports the OS says are free on `host` right now.

    The metrics ports are picked this way, not derived from the gRPC ports, so
    two suites on neighbouring ports never collide (and crash-loop).
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


async def wait_redis(address: str, deadline: float) -> float:
    """Poll Redis with PING until it answers; returns the monotonic time it did."""
    host, _, port = address.rpartition(":")
    client = redis.asyncio.Redis(host=host, port=int(port), socket_timeout=1.0)
    try:
        while True:
            try:
                if await client.ping():
                    return time.monotonic()
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis at {address} did not answer in time")
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    host: str = "127.0.0.1"
    ports: dict[str, int] = dataclasses.field(
        default_factory=lambda: {
            "gateway": 50051,
            "registry": 50052,
            "inference": 50053,
            "trainer": 50054,
        }
    )
    redis_port: int = 50059
    #: The gateway's HTTP front (OpenAI-compatible /v1); -1 turns it off.
    http_port: int = 50050
    #: Use this Redis instead of starting one; "none" runs without Redis.
    redis_url: str = ""
    data_dir: Path = Path(".lattice")
    grace_seconds: float = 10.0
    #: Service logs go to <data_dir>/logs/<service>.log unless this is set.
    console_logs: bool = False
    #: TLS on every listener, mutual TLS between services (a development CA and
    #: per-service certificates are made in <data_dir>/tls/ on first start).
    #: Off, calls between services still need a signed internal token.
    tls: bool = False

    def address(self, name: str) -> str:
        return f"{self.host}:{self.ports[name]}"


class LocalSuite:
    """Starts Redis and the four services, waits for health, stops them all."""

    def __init__(self, config: SuiteConfig, report: Callable[[str], None] = print) -> None:
        self.config = dataclasses.replace(config, data_dir=config.data_dir.resolve())
        self._report = report
        self._supervisor: Supervisor | None = None
        self.redis_url = ""
        self.ready_after: dict[str, float] = {}
        self.certs: dict[str, CertFiles] = {}
        #: Each service's Prometheus port, picked free at start.
        self.metrics_ports: dict[str, int] = {}

    @property
    def log_dir(self) -> Path:
        return self.config.data_dir / "logs"

    async def start(self, timeout: float = 60.0) -> None:
        """Start everything; raises TimeoutError if a service never turns healthy."""
        started = time.monotonic()
        # Made before any service starts, so all four read the same ring and CA.
        create_key_ring(self.config.data_dir / DEFAULT_KEY_RING_PATH)
        self.certs = (
            ensure_dev_pki(
                self.config.data_dir, [*SERVICE_ORDER, SUPERVISOR], hosts=[self.config.host]
            )
            if self.config.tls
            else {}
        )
        self.metrics_ports = dict(
            zip(SERVICE_ORDER, free_ports(self.config.host, len(SERVICE_ORDER)), strict=True)
        )
        redis_spec = self._redis_spec()
        specs = self._specs()
        self._supervisor = Supervisor(
            [*([redis_spec] if redis_spec else []), *specs],
            grace_seconds=self.config.grace_seconds,
            report=self._report,
        )
        await self._supervisor.start()
        self.ready_after = await self._supervisor.wait_healthy(timeout)
        self.ready_after["total"] = time.monotonic() - started

    async def stop(self) -> None:
        """Stop every child; safe at any point of `start` (SIGTERM during start-up)."""
        if self._supervisor is not None:
            await self._supervisor.stop()

    def _redis_spec(self) -> ChildSpec | None:
        """The bundled Redis as one more supervised child (restarted when it dies),
        or None with --redis-url or without a redis-server; sets `redis_url`."""
        config = self.config
        if config.redis_url:
            self.redis_url = "" if config.redis_url == "none" else config.redis_url
            return None
        binary = redis_binary()
        if binary is None:
            self._report("no redis-server found: running without cache and shared quotas")
            return None
        directory = config.data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        self.redis_url = f"redis://{config.host}:{config.redis_port}/0"
        return ChildSpec(
            name="redis",
            address=f"{config.host}:{config.redis_port}",
            argv=[
                *(binary, "--port", str(config.redis_port), "--bind", config.host),
                *("--save", "", "--dir", str(directory)),
            ],
            log_path=None if config.console_logs else self.log_dir / "redis.log",
            probe=wait_redis,
        )

    def _specs(self) -> list[ChildSpec]:
        """The four services, each told where the others are."""
        config = self.config
        shared_env = {
            "LATTICE_DATA_DIR": str(config.data_dir),
            "LATTICE_REGISTRY_ADDRESS": config.address("registry"),
            "LATTICE_INFERENCE_ADDRESSES": config.address("inference"),
            "LATTICE_TRAINER_ADDRESS": config.address("trainer"),
            "LATTICE_REDIS_URL": self.redis_url,
            "LATTICE_DEV_JWT_SECRET": dev_secret(config.data_dir),
            # A local Triton (e.g. `lattice export-triton` + tritonserver) may serve
            # versions; nothing beyond loopback. Add patterns with LATTICE_REMOTE_ALLOWLIST.
            "LATTICE_REMOTE_ALLOWLIST": os.environ.get(
                "LATTICE_REMOTE_ALLOWLIST", "127.0.0.1:*,localhost:*,[::1]:*"
            ),
            # Data from before ownership belongs to the tenant `lattice token` names.
            "LATTICE_DEFAULT_TENANT": os.environ.get("LATTICE_DEFAULT_TENANT", LOCAL_TENANT),
        }
        return [
            ChildSpec(
                name=name,
                address=config.address(name),
                argv=service_argv(name, *self._flags(name)),
                env={**shared_env, **self._tls_env(name)},
                log_path=None if config.console_logs else self.log_dir / f"{name}.log",
                credentials=self.client_credentials(),
            )
            for name in SERVICE_ORDER
        ]

    def _tls_env(self, name: str) -> dict[str, str]:
        """A service's certificate, the CA it trusts and, internal ones, client auth."""
        if not self.certs:
            return {}
        files = self.certs[name]
        prefix = f"LATTICE_{name.upper()}_"
        env = {
            prefix + "TLS_CERT_FILE": str(files.cert),
            prefix + "TLS_KEY_FILE": str(files.key),
            prefix + "TLS_CA_FILE": str(files.ca),
        }
        if name in INTERNAL_SERVICES:
            env[prefix + "TLS_CLIENT_CA_FILE"] = str(files.ca)
        return env

    def client_credentials(self) -> grpc.ChannelCredentials | None:
        """How `lattice up` itself reaches the services: TLS with its own certificate."""
        if not self.certs:
            return None
        files = self.certs[SUPERVISOR]
        return grpc.ssl_channel_credentials(
            files.ca.read_bytes(), files.key.read_bytes(), files.cert.read_bytes()
        )

    def _flags(self, name: str) -> list[str]:
        flags = [
            *("--host", self.config.host, "--port", str(self.config.ports[name])),
            *("--metrics-port", str(self.metrics_ports[name])),
        ]
        if name == "gateway":
            flags += ["--http-port", str(self.config.http_port)]
        return flags

    def describe(self) -> list[str]:
        """Human-readable endpoint lines."""
        config = self.config
        lines = []
        for name in ("gateway", "registry", "inference", "trainer"):
            port = config.ports[name]
            scheme = "https" if config.tls else "http"
            lines.append(
                f"  {name:<10} {config.host}:{port}  "
                f"metrics {scheme}://{config.host}:{self.metrics_ports[name]}/metrics"
            )
        if config.http_port >= 0:
            lines.append(
                f"  {'http':<10} {'https' if config.tls else 'http'}://{config.host}:{config.http_port}/v1"
                "  (OpenAI-compatible)"
            )
        if self.redis_url:
            lines.append(f"  {'redis':<10} {self.redis_url}")
        if config.tls:
            lines.append(
                f"  {'tls':<10} CA {config.data_dir / DEV_CA_FILE} (clients: LATTICE_TLS=1)"
            )
        if not config.console_logs:
            lines.append(f"  {'logs':<10} {self.log_dir}/<service>.log")
        return lines
