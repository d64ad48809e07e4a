"""Commands that run servers (`up`, `demo`, `serve`) live with the services.

The client install (`pip install lattice-llm`) carries the CLI but not the
server packages, so these commands are looked up lazily: `services.suite` is
imported only when one of them is invoked (or listed in `--help`), and a
missing server extra turns into one line that says what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import click

INSTALL_HINT = "pip install 'lattice-llm[ml]'"
#: What a server process imports first; checked before anything is started.
SERVER_PACKAGES = (
    "torch",
    "transformers",
    "grpc_reflection",
    "opentelemetry.sdk",
    "prometheus_client",
    "redis",
    "starlette",
    "uvicorn",
)
#: Command name -> (module, attribute) on the server side.
SERVER_COMMANDS = {
    "up": ("services.suite.up", "up"),
    "demo": ("services.suite.demo", "demo"),
    "keys": ("services.suite.keys", "keys"),
}
#: What `lattice --help` shows for them, so listing commands imports nothing.
SHORT_HELP = {
    "up": "Run gateway, registry, inference and trainer on loopback until Ctrl-C.",
    "demo": "Start the suite, train a small GPT-2, serve it and stream a generation.",
    "keys": "Look at and rotate the suite's key ring (sealing, signing, internal tokens).",
}


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_server_packages() -> list[str]:
    """The server packages this interpreter cannot import (empty on a full install)."""
    return [name for name in SERVER_PACKAGES if not _importable(name)]


def require_server_extras(command: str) -> None:
    """Exit once, non-zero, with the install line when the server extras are absent."""
    missing = missing_server_packages()
    if missing:
        raise click.ClickException(
            f"`lattice {command}` runs the Lattice services, which need the server "
            f"extras (missing: {', '.join(missing)}). Install them with: {INSTALL_HINT}"
        )


def _placeholder(name: str) -> click.Command:
    """Stands in for a server command on a client-only install."""

    def run(**_: Any) -> None:
        require_server_extras(name)

    return click.Command(
        name,
        callback=run,
        help=f"(needs the server extras: {INSTALL_HINT})",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


def load_server_command(name: str) -> click.Command:
    """The real command when the server side imports, else the placeholder."""
    if missing_server_packages():
        return _placeholder(name)
    module, attribute = SERVER_COMMANDS[name]
    command: click.Command = getattr(importlib.import_module(module), attribute)
    return command


class LatticeGroup(click.Group):
    """The `lattice` group: client commands eagerly, server commands on demand."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SERVER_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SERVER_COMMANDS:
            if self._listing:
                return click.Command(cmd_name, short_help=SHORT_HELP[cmd_name])
            return load_server_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing = False
