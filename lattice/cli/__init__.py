"""The `lattice` command line. Each command lives in its own module; the ones
that run servers are loaded from `services.suite` only when used."""

from __future__ import annotations

import click

from lattice.cli._commands import register
from lattice.cli._serve import serve
from lattice.cli._server_side import LatticeGroup


@click.group(cls=LatticeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lattice-llm", prog_name="lattice")
def main() -> None:
    """Lattice: governed LLM services over gRPC."""


main.add_command(serve)
register(main)
