"""The `lattice` command line. Each command lives in its own module."""

from __future__ import annotations

import click

from lattice.cli._commands import register
from lattice.cli._demo import demo
from lattice.cli._serve import serve
from lattice.cli._up import up


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lattice-llm", prog_name="lattice")
def main() -> None:
    """Lattice: governed LLM services over gRPC."""


main.add_command(up)
main.add_command(serve)
main.add_command(demo)
register(main)
