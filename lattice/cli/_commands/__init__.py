"""The client commands of `lattice` (everything but `up` and `serve`), one module each."""

from __future__ import annotations

import click

from lattice.cli._commands.classify import classify
from lattice.cli._commands.data import data
from lattice.cli._commands.deploy import deploy
from lattice.cli._commands.embed import embed
from lattice.cli._commands.export_triton import export_triton
from lattice.cli._commands.generate import generate
from lattice.cli._commands.jobs import jobs
from lattice.cli._commands.models import models
from lattice.cli._commands.similar import similar
from lattice.cli._commands.tenants import tenants
from lattice.cli._commands.token import token
from lattice.cli._commands.train import train
from lattice.cli._commands.versions import versions

COMMANDS: tuple[click.Command, ...] = (
    token,
    models,
    versions,
    deploy,
    generate,
    embed,
    similar,
    classify,
    data,
    train,
    jobs,
    export_triton,
    tenants,
)


def register(group: click.Group) -> None:
    """Add every client command to the `lattice` group."""
    for command in COMMANDS:
        group.add_command(command)
    group.add_command(data, name="datasets")  # the name the issue tracker and docs use
