"""`lattice models`: list, show and create registry models."""

from __future__ import annotations

import click

from lattice import _requests
from lattice.cli._commands.deploy import describe
from lattice.cli._common import (
    Session,
    lattice_command,
    parse_pairs,
    print_fields,
    print_table,
    when,
)


@click.group()
def models() -> None:
    """Models in the registry."""


@models.command("list")
@lattice_command
def list_models(session: Session) -> None:
    """List models in name order."""
    found = session.client().list_models()
    session.emit(
        found,
        lambda: print_table(
            ["name", "task", "latest", "created", "description"],
            [
                (
                    m.name,
                    _requests.task_name(m.task),
                    m.latest_version or "-",
                    when(m.create_time),
                    m.description,
                )
                for m in found
            ],
        ),
    )


@models.command("show")
@click.argument("name")
@lattice_command
def show_model(session: Session, name: str) -> None:
    """Show one model with its aliases and deployment."""
    client = session.client()
    model = client.get_model(name)
    aliases = client.list_aliases(name)
    deployment = client.get_deployment(name)
    routes = ", ".join(f"v{r.version}={r.weight}" for r in deployment.routes) or "offline"
    if deployment.shadow_version:
        routes += f" (shadow v{deployment.shadow_version})"
    session.emit(
        {"model": model, "aliases": aliases, "deployment": deployment},
        lambda: print_fields(
            [
                ("name", model.name),
                ("task", _requests.task_name(model.task)),
                ("description", model.description),
                ("labels", ", ".join(f"{k}={v}" for k, v in sorted(model.labels.items()))),
                ("latest version", model.latest_version or "-"),
                ("created", when(model.create_time)),
                ("aliases", ", ".join(f"{a.alias}->v{a.version}" for a in aliases) or "-"),
                ("deployment", routes),
            ]
        ),
    )


@models.command("create")
@click.argument("name")
@click.option(
    "--task",
    type=click.Choice(_requests.TASK_NAMES),
    default="text-generation",
    show_default=True,
    help="What the model is for.",
)
@click.option("--description", default="", help="Free text, at most 1024 characters.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@lattice_command
def create_model(
    session: Session, name: str, task: str, description: str, labels: tuple[str, ...]
) -> None:
    """Create a model NAME (a lower-case DNS label)."""
    model = session.client().create_model(
        name, task, description=description, labels=parse_pairs(labels, "--label")
    )
    session.emit(model, lambda: click.echo(f"created model {model.name}"))


@models.command("history")
@click.argument("name")
@lattice_command
def history(session: Session, name: str) -> None:
    """Deployment changes of model NAME, newest first (who, when, why)."""
    entries = session.client().history(name)
    session.emit(
        entries,
        lambda: print_table(
            ["revision", "time", "actor", "from", "to", "reason"],
            [
                (
                    e.revision,
                    when(e.time),
                    e.actor,
                    describe(e.from_deployment),
                    describe(e.to_deployment),
                    e.reason,
                )
                for e in entries
            ],
        ),
    )
