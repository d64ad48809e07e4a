"""`lattice up`: the whole suite on loopback, supervised, with embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lattice import Client
from lattice.tokens import TENANT_SCOPES, mint_dev_token
from services.runtime.pki import dev_ca_file
from services.suite.local import LOCAL_TENANT, LocalSuite, SuiteConfig, dev_secret
from services.suite.starter import (
    StarterRecipe,
    online_version,
    probe_token,
    train_starter,
    wait_until_served,
)


def suite_options(command):
    """The options that say where the local suite runs (shared with `lattice demo`)."""
    options = [
        click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind."),
        click.option("--gateway-port", default=50051, show_default=True),
        click.option("--registry-port", default=50052, show_default=True),
        click.option("--inference-port", default=50053, show_default=True),
        click.option("--trainer-port", default=50054, show_default=True),
        click.option(
            "--http-port",
            default=50050,
            show_default=True,
            help="The gateway's HTTP front (OpenAI-compatible /v1); -1 turns it off.",
        ),
        click.option(
            "--redis-port",
            default=50059,
            show_default=True,
            help="Port of the bundled Redis (when --redis-url is not given).",
        ),
        click.option(
            "--redis-url",
            default="",
            envvar="LATTICE_REDIS_URL",
            help="Use this Redis instead of starting one; 'none' runs without Redis.",
        ),
        click.option(
            "--data-dir",
            default=".lattice",
            show_default=True,
            envvar="LATTICE_DATA_DIR",
            type=click.Path(file_okay=False, path_type=Path),
        ),
        click.option("--grace", default=10.0, show_default=True, help="Drain period on stop (s)."),
        click.option(
            "--console-logs",
            is_flag=True,
            help="Print service logs here instead of <data-dir>/logs/.",
        ),
        click.option(
            "--tls",
            is_flag=True,
            help="TLS on every listener and mutual TLS between services, from a "
            "development CA made in <data-dir>/tls/ (clients: LATTICE_TLS=1).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def suite_config(options: dict) -> SuiteConfig:
    """Pop the suite options out of a command's keyword arguments."""
    ports = {
        name: options.pop(f"{name}_port")
        for name in ("gateway", "registry", "inference", "trainer")
    }
    return SuiteConfig(
        host=options.pop("host"),
        ports=ports,
        redis_port=options.pop("redis_port"),
        http_port=options.pop("http_port"),
        redis_url=options.pop("redis_url"),
        data_dir=options.pop("data_dir"),
        grace_seconds=options.pop("grace"),
        console_logs=options.pop("console_logs"),
        tls=options.pop("tls"),
    )


def report(line: str) -> None:
    click.echo(f"lattice: {line}", err=True)


@click.command()
@suite_options
@click.option(
    "--starter-model",
    default="",
    metavar="NAME",
    help="Serve a model called NAME: if nothing of it is online, train a small GPT-2 on "
    "the built-in corpus first (about a minute; later starts reuse it).",
)
def up(starter_model: str, **options) -> None:
    """Run gateway, registry, inference and trainer on loopback until Ctrl-C."""
    suite = LocalSuite(suite_config(options), report)
    if not asyncio.run(_run(suite, starter_model)):
        raise SystemExit(1)


#: The starter model belongs to the tenant `lattice token` names by default, so the
#: token a developer mints next can manage it.
STARTER_TENANT = LOCAL_TENANT


def _ensure_starter(suite: LocalSuite, model: str) -> None:
    """Make sure `model` is online, training it on first use."""
    config = suite.config
    secret = dev_secret(config.data_dir)
    token = mint_dev_token(secret, tenant=STARTER_TENANT, scopes=TENANT_SCOPES)
    root = dev_ca_file(config.data_dir) if config.tls else None
    address = config.address("gateway")
    probe = Client(address, probe_token(secret), tls=config.tls, root_certificates=root)
    client = Client(address, token, tls=config.tls, root_certificates=root)
    with client, probe:
        version = online_version(client, model)
        if not version:
            version = train_starter(client, StarterRecipe(model=model)).registered_version
        wait_until_served(probe, f"{model}:{version}")
    click.echo(f"Serving {model}:{version}. Try:")
    click.echo(f"  export LATTICE_TOKEN=$(lattice token --data-dir {config.data_dir})")
    if config.tls:
        click.echo(f"  export LATTICE_TLS=1 LATTICE_TLS_ROOT_CERT={dev_ca_file(config.data_dir)}")
    click.echo(f"  lattice generate {model} 'Return the' --stream --temperature 0.8 --seed 1")
    if config.http_port >= 0:
        click.echo(
            f"  curl http://{config.host}:{config.http_port}/v1/completions "
            '-H "Authorization: Bearer $LATTICE_TOKEN" -H "Content-Type: application/json" '
            f'-d \'{{"model": "{model}", "prompt": "Return the", "max_tokens": 16}}\''
        )


def _in_daemon_thread(fn: Callable[..., None], *args: Any) -> asyncio.Future[None]:
    """Run blocking `fn` in a daemon thread: unlike `asyncio.to_thread`, exiting does
    not wait for it (a SIGTERM while the starter model trains must not hang)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            fn(*args)
        except BaseException as exc:  # handed to the event loop, not lost
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=run, name="starter-model", daemon=True).start()
    return future


async def _run(suite: LocalSuite, starter_model: str = "") -> bool:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    healthy = True
    # SIGTERM at any point stops the suite: start-up runs as a task the signal can
    # cut short (children already spawned are then stopped like the rest).
    starting = asyncio.create_task(suite.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        report("stopping during start-up")
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
    elif isinstance(starting.exception(), TimeoutError):
        report(str(starting.exception()))
        healthy = False
    else:
        starting.result()
        total = suite.ready_after["total"]
        click.echo(f"Lattice is up in {total:.1f}s (data in {suite.config.data_dir})")
        for line in suite.describe():
            click.echo(line)
        if starter_model:
            starter = _in_daemon_thread(_ensure_starter, suite, starter_model)
            either: list[asyncio.Future[Any]] = [starter, stopping]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if starter.done() and starter.exception() is not None:
                report(f"starter model: {starter.exception()}")
        if not stop.is_set():
            click.echo("Ctrl-C to stop.")
        await stop.wait()
        report("stopping (draining in-flight requests)")
    stopping.cancel()
    await suite.stop()
    return healthy
