"""`lattice data`: prepare, list and show datasets."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lattice import Client, _requests
from lattice.cli._common import Session, lattice_command, print_fields, print_table, when
from lattice.v1 import trainer_pb2


@click.group()
def data() -> None:
    """Datasets: cleaned, deduplicated, split and tokenised text."""


@data.command("prepare")
@click.argument("name")
@click.argument("sources", nargs=-1)
@click.option(
    "--source",
    "uploads",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="A local file or directory: uploaded (with a progress bar) into your source "
    "directory on the trainer first. Repeatable.",
)
@click.option(
    "--tokenizer",
    type=click.Choice(_requests.TOKENIZER_NAMES),
    default="bpe",
    show_default=True,
    help="bpe for GPT-2-style models, wordpiece for BERT-style.",
)
@click.option("--vocab-size", type=click.IntRange(min=0), default=0, help="Default 8000.")
@click.option("--base-model", default="", help="Reuse this registered version's tokenizer.")
@click.option(
    "--validation-fraction", type=click.FloatRange(0, 0.5), default=0.0, help="Default 0.1."
)
@click.option("--seed", type=click.IntRange(min=0), default=0)
@click.option("--text-field", default="", help="Field/column with the text (.jsonl/.csv).")
@click.option(
    "--normalize/--no-normalize",
    default=True,
    show_default=True,
    help="Unicode NFKC and whitespace normalisation.",
)
@click.option("--strip-markup/--keep-markup", default=True, show_default=True)
@click.option(
    "--dedupe/--no-dedupe", default=True, show_default=True, help="Drop exact duplicates."
)
@click.option("--near-dedupe", is_flag=True, help="Drop near-duplicates (MinHash).")
@click.option("--min-chars", type=click.IntRange(min=0), default=0)
@click.option("--max-chars", type=click.IntRange(min=0), default=0)
@lattice_command
def prepare(
    session: Session,
    name: str,
    sources: tuple[str, ...],
    uploads: tuple[Path, ...],
    normalize: bool,
    strip_markup: bool,
    dedupe: bool,
    near_dedupe: bool,
    min_chars: int,
    max_chars: int,
    **options,
) -> None:
    """Prepare dataset NAME from SOURCES: paths/globs under your source directory on the
    trainer, builtin:python-docstrings, or local files sent with --source."""
    if not sources and not uploads:
        raise click.UsageError("give SOURCES, --source LOCAL_PATH, or both")
    cleaning = trainer_pb2.CleaningOptions(
        normalize_unicode=normalize,
        normalize_whitespace=normalize,
        strip_markup=strip_markup,
        deduplicate=dedupe,
        near_deduplicate=near_dedupe,
        min_chars=min_chars,
        max_chars=max_chars,
    )
    client = session.client()
    remote = [*sources, *(_upload(client, local) for local in uploads)]
    dataset = client.prepare_dataset(name, remote, cleaning=cleaning, **options)
    session.emit(dataset, lambda: _show(dataset))


def _upload(client: Client, local: Path) -> str:
    """Send `local` to the trainer with a progress bar (on stderr); its remote path."""
    total = sum(path.stat().st_size for _, path in _requests.source_files(local))
    with click.progressbar(
        length=total, label=f"uploading {local}", file=sys.stderr, show_pos=True
    ) as bar:
        sent = client.upload_sources(local, on_progress=bar.update)
    return sent.directory


def _show(dataset: trainer_pb2.Dataset) -> None:
    report = dataset.report
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(report.dropped.items())) or "none"
    print_fields(
        [
            ("dataset", dataset.id),
            ("digest", dataset.digest),
            ("created", when(dataset.create_time)),
            ("documents", f"{report.documents_in} in, {report.documents_out} kept"),
            ("dropped", dropped),
            ("split", f"{report.train_documents} train / {report.validation_documents} val"),
            ("tokens", f"{report.train_tokens} train / {report.validation_tokens} val"),
            ("vocabulary", report.vocab_size),
        ]
    )


@data.command("list")
@lattice_command
def list_datasets(session: Session) -> None:
    """List datasets, newest first."""
    found = session.client().list_datasets()
    session.emit(
        found,
        lambda: print_table(
            ["id", "documents", "train tokens", "vocab", "created"],
            [(d.id, d.report.documents_out, d.report.train_tokens, d.report.vocab_size,
              when(d.create_time)) for d in found],
        ),
    )  # fmt: skip


@data.command("show")
@click.argument("dataset_id")
@lattice_command
def show_dataset(session: Session, dataset_id: str) -> None:
    """Show one dataset and its preparation report."""
    dataset = session.client().get_dataset(dataset_id)
    session.emit(dataset, lambda: _show(dataset))
