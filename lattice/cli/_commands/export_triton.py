"""`lattice export-triton`: turn a transformers artifact into a Triton model repository."""

from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

import click

from lattice.cli._common import Session, lattice_command
from lattice.cli._server_side import require_server_extras
from lattice.cli.progress import transfer


@click.command("export-triton")
@click.argument("repo_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--source",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A local transformers model directory.",
)
@click.option(
    "--from-registry", "ref", default="", help="Or download this registered version first (name:N)."
)
@click.option("--name", "model_name", default="", help="Triton model name (default: from source).")
@click.option(
    "--task",
    type=click.Choice(["generate", "embed"]),
    default=None,
    help="Default: detected from the artifact's config.json.",
)
@click.option(
    "--decoupled/--no-decoupled",
    default=True,
    show_default=True,
    help="Stream token by token (generation).",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True
)
@click.option("--dtype", default="", help='Torch dtype, e.g. "float16" on GPU.')
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing model directory.")
@lattice_command
def export_triton(
    session: Session,
    repo_dir: Path,
    source: Path | None,
    ref: str,
    model_name: str,
    task: str | None,
    decoupled: bool,
    device: str,
    dtype: str,
    instances: int,
    overwrite: bool,
) -> None:
    """Write REPO_DIR/<name>/ (config.pbtxt + Python backend) for a Triton server.

    Runs the inference service's exporter locally, so it needs the server and ml
    extras (`pip install 'lattice-llm[ml]'`); the rest of the CLI does not.
    """
    if (source is None) == (not ref):
        raise click.UsageError("give either --source DIR or --from-registry name:N")
    require_server_extras("export-triton")
    export_triton_repository = importlib.import_module(
        "services.inference.triton_export"
    ).export_triton_repository
    options = {
        "decoupled": decoupled,
        "device": device,
        "dtype": dtype,
        "instance_count": instances,
        "overwrite": overwrite,
    }
    if task:
        options["task"] = task
    with tempfile.TemporaryDirectory(prefix="lattice-export-") as scratch:
        if ref:
            name, _, number = ref.partition(":")
            if not number.isdigit():
                raise click.BadParameter("expected name:N", param_hint="--from-registry")
            client = session.client()
            version = client.get_version(name, int(number))
            source = Path(scratch) / "artifact"
            with transfer("download") as progress:
                client.download_artifact(version.artifact_digest, source, progress=progress)
            options["artifact_digest"] = version.artifact_digest
            model_name = model_name or name
        assert source is not None
        model_name = model_name or source.resolve().name
        with transfer("export") as progress:
            written = export_triton_repository(
                source, repo_dir, model_name, progress=progress, **options
            )
    session.emit(
        {"model_dir": str(written), "model_name": model_name},
        lambda: click.echo(f"wrote {written}"),
    )
