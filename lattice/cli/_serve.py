"""`lattice serve <service>`: run one service in the foreground."""

from __future__ import annotations

import os
import sys

import click

from lattice.cli._server_side import require_server_extras

SERVICES = ("gateway", "registry", "inference", "trainer")


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("service", type=click.Choice(SERVICES))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def serve(service: str, args: tuple[str, ...]) -> None:
    """Run one SERVICE; every other option goes to it (see `lattice serve SERVICE --help`)."""
    require_server_extras(f"serve {service}")
    # Replace this process, so signals and the exit code are the service's own.
    os.execv(sys.executable, [sys.executable, "-m", f"services.{service}", *args])
