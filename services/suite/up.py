"""`lattice up`: the whole suite on loopback, supervised, with embedded defaults."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from lattice import Client
from lattice.tokens import TENANT_SCOPES, mint_dev_token
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
        click.option("--redis-port", default=50059, show_default=True,
                     help="Port of the bundled Redis (when --redis-url is not given)."),
        click.option("--redis-url", default="", envvar="LATTICE_REDIS_URL",
                     help="Use this Redis instead of starting one; 'none' runs without Redis."),
        click.option("--data-dir", default=".lattice", show_default=True, envvar="LATTICE_DATA_DIR",
                     type=click.Path(file_okay=False, path_type=Path)),
        click.option("--grace", default=10.0, show_default=True, help="Drain period on stop (s)."),
        click.option("--console-logs", is_flag=True,
                     help="Print service logs here instead of <data-dir>/logs/."),
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


def suite_config(options: dict) -> SuiteConfig:
    """Pop the suite options out of a command's keyword arguments."""
    ports = {name: options.pop(f"{name}_port")
             for name in ("gateway", "registry", "inference", "trainer")}  # fmt: skip
    return SuiteConfig(
        host=options.pop("host"),
        ports=ports,
        redis_port=options.pop("redis_port"),
        redis_url=options.pop("redis_url"),
        data_dir=options.pop("data_dir"),
        grace_seconds=options.pop("grace"),
        console_logs=options.pop("console_logs"),
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
    probe = Client(config.address("gateway"), probe_token(secret))
    with Client(config.address("gateway"), token) as client, probe:
        version = online_version(client, model)
        if not version:
            version = train_starter(client, StarterRecipe(model=model)).registered_version
        wait_until_served(probe, f"{model}:{version}")
    click.echo(f"Serving {model}:{version}. Try:")
    click.echo(f"  export LATTICE_TOKEN=$(lattice token --data-dir {config.data_dir})")
    click.echo(f"  lattice generate {model} 'Return the' --stream --temperature 0.8 --seed 1")


async def _run(suite: LocalSuite, starter_model: str = "") -> bool:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    healthy = True
    try:
        await suite.start()
    except TimeoutError as exc:
        report(str(exc))
        healthy = False
    else:
        total = suite.ready_after["total"]
        click.echo(f"Lattice is up in {total:.1f}s (data in {suite.config.data_dir})")
        for line in suite.describe():
            click.echo(line)
        if starter_model:
            starter = asyncio.create_task(asyncio.to_thread(_ensure_starter, suite, starter_model))
            await asyncio.wait([starter, asyncio.create_task(stop.wait())],
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if starter.done() and starter.exception() is not None:
                report(f"starter model: {starter.exception()}")
        click.echo("Ctrl-C to stop.")
        await stop.wait()
        report("stopping (draining in-flight requests)")
    await suite.stop()
    return healthy
