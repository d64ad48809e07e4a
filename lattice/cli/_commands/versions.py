"""`lattice versions`: list, show, create (upload a directory) and download model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lattice import _requests
from lattice.cli._common import (
    Session,
    lattice_command,
    parse_pairs,
    print_fields,
    print_table,
    when,
)
from lattice.cli.progress import transfer


@click.group()
def versions() -> None:
    """Immutable versions of a model."""


@versions.command("list")
@click.argument("model")
@lattice_command
def list_versions(session: Session, model: str) -> None:
    """List MODEL's versions, newest first."""
    found = session.client().list_versions(model)
    session.emit(
        found,
        lambda: print_table(
            ["version", "format", "digest", "size", "created", "metrics"],
            [
                (
                    v.version,
                    _requests.format_name(v.format),
                    v.artifact_digest[:12],
                    v.artifact_size_bytes,
                    when(v.create_time),
                    ", ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items())),
                )
                for v in found
            ],
        ),
    )


@versions.command("show")
@click.argument("model")
@click.argument("version", type=click.IntRange(min=1))
@lattice_command
def show_version(session: Session, model: str, version: int) -> None:
    """Show one VERSION of MODEL."""
    v = session.client().get_version(model, version)
    session.emit(
        v,
        lambda: print_fields(
            [
                ("model", v.model_name),
                ("version", v.version),
                ("format", _requests.format_name(v.format)),
                ("artifact", v.artifact_uri),
                ("digest", v.artifact_digest),
                ("size", v.artifact_size_bytes),
                ("created", when(v.create_time)),
                ("training job", v.lineage.training_job_id or "-"),
                ("metrics", ", ".join(f"{k}={x:.4g}" for k, x in sorted(v.metrics.items()))),
                ("params", ", ".join(f"{k}={x}" for k, x in sorted(v.params.items()))),
                ("description", v.description),
            ]
        ),
    )


@versions.command("create")
@click.argument("model")
@click.option(
    "--from",
    "source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Model directory to upload (packed as a deterministic tar).",
)
@click.option("--uri", default="", help="Register an artifact already stored, by URI.")
@click.option("--digest", default="", help="sha256 of the artifact (with --uri).")
@click.option(
    "--format",
    "format_",
    type=click.Choice(_requests.FORMAT_NAMES),
    default="transformers",
    show_default=True,
)
@click.option("--metric", "metrics", multiple=True, metavar="KEY=NUMBER", help="Repeatable.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Repeatable.")
@click.option("--description", default="")
@lattice_command
def create_version(
    session: Session,
    model: str,
    source: Path | None,
    uri: str,
    digest: str,
    format_: str,
    metrics: tuple[str, ...],
    params: tuple[str, ...],
    description: str,
) -> None:
    """Register the next version of MODEL: upload a directory with --from, or --uri/--digest."""
    if (source is None) == (not uri):
        raise click.UsageError("give either --from DIR or --uri URI (with --digest)")
    try:
        metric_values = {k: float(v) for k, v in parse_pairs(metrics, "--metric").items()}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metric") from None
    fields: dict[str, Any] = {
        "metrics": metric_values,
        "params": parse_pairs(params, "--param"),
        "description": description,
    }
    client = session.client()
    if source is not None:
        with transfer("upload") as progress:
            version = client.register_version(
                model, source, format=format_, progress=progress, **fields
            )
    else:
        version = client.create_version(
            model, artifact_uri=uri, artifact_digest=digest, format=format_, **fields
        )
    session.emit(
        version,
        lambda: click.echo(
            f"registered {version.model_name}:{version.version} "
            f"(sha256 {version.artifact_digest[:12]}, {version.artifact_size_bytes} bytes)"
        ),
    )


@versions.command("download")
@click.argument("model")
@click.argument("version", type=int)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@lattice_command
def download_version(session: Session, model: str, version: int, directory: Path) -> None:
    """Download MODEL's VERSION and unpack it into DIRECTORY (sha256 checked)."""
    if directory.exists() and any(directory.iterdir()):
        raise click.BadParameter(f"{directory} is not empty", param_hint="DIRECTORY")
    client = session.client()
    found = client.get_version(model, version)
    with transfer("download") as progress:
        data = client.download_artifact(found.artifact_digest, directory, progress=progress)
    session.emit(
        {"directory": str(directory), "digest": found.artifact_digest, "size_bytes": len(data)},
        lambda: click.echo(f"downloaded {model}:{version} into {directory} ({len(data)} bytes)"),
    )
