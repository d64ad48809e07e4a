"""`lattice data` (alias `lattice datasets`): prepare, list and show datasets."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from lattice import Client, _requests
from lattice.cli._common import Session, lattice_command, print_fields, print_table, when
from lattice.cli.progress import preparing
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
@click.option("--encoding", default="", help="Declared encoding of the files; default: detect.")
@click.option(
    "--language", default="auto", show_default=True, help="auto (by script), zh, en, or ISO 639-1."
)
@click.option("--convert", "script_conversion", default="", help="OpenCC conversion: t2s, s2t ...")
@click.option("--segment", "segment_words", is_flag=True, help="Store each document's word list.")
@click.option("--remove-stop-words", is_flag=True, help="Per-language stop-word lists.")
@click.option(
    "--stop-words",
    "stop_words_file",
    default="",
    help="Extra stop words, one a line: a local file (uploaded) or a path in your "
    "source directory.",
)
@click.option(
    "--user-dictionary",
    default="",
    help="jieba user dictionary for --segment: a local file (uploaded) or a path in your "
    "source directory.",
)
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
    language: str,
    script_conversion: str,
    segment_words: bool,
    remove_stop_words: bool,
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
        language=language,
        script_conversion=script_conversion,
        segment_words=segment_words,
        remove_stop_words=remove_stop_words,
    )
    client = session.client()
    uploaded = [_upload(client, local) for local in uploads]
    for word_list in ("stop_words_file", "user_dictionary"):
        if options[word_list] and os.path.isfile(options[word_list]):
            options[word_list] = _upload(client, Path(options[word_list])).directory
    size = local_size(sources) + sum(sent.size_bytes for sent in uploaded)
    remote = [*sources, *(sent.directory for sent in uploaded)]
    with preparing(size):
        dataset = client.prepare_dataset(name, remote, cleaning=cleaning, **options)
    session.emit(dataset, lambda: _show(dataset))


def _upload(client: Client, local: Path) -> trainer_pb2.UploadSourcesResponse:
    """Send `local` to the trainer with a progress bar (on stderr)."""
    total = sum(path.stat().st_size for _, path in _requests.source_files(local))
    with click.progressbar(
        length=total, label=f"uploading {local}", file=sys.stderr, show_pos=True
    ) as bar:
        return client.upload_sources(local, on_progress=bar.update)


def local_size(sources: tuple[str, ...]) -> int:
    """Bytes of the sources' files that exist on this machine (0 for the rest)."""
    total = 0
    for source in sources:
        for path in glob.glob(source, recursive=True) if not source.startswith("builtin:") else ():
            if os.path.isfile(path):
                total += os.path.getsize(path)
            elif os.path.isdir(path):
                for root, _, files in os.walk(path):
                    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def _counts(values: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "none"


def _show(dataset: trainer_pb2.Dataset) -> None:
    report = dataset.report
    by_language = report.stop_words_removed_by_language
    fields: list[tuple[str, object]] = [
        ("dataset", dataset.id),
        ("digest", dataset.digest),
        ("created", when(dataset.create_time)),
        ("documents", f"{report.documents_in} in, {report.documents_out} kept"),
        ("dropped", _counts(report.dropped)),
        ("encodings", _counts(report.encodings)),
        ("invalid bytes", report.invalid_bytes),
        ("repaired", f"{report.repaired_documents} (mojibake)"),
        ("languages", _counts(report.languages)),
        ("converted", report.converted_documents),
        ("segmented", report.segmented_documents),
        (
            "stop words",
            f"{report.stop_words_removed} ({_counts(by_language)})",
        ),
        ("near-duplicates", report.near_duplicates_dropped),
        ("split", f"{report.train_documents} train / {report.validation_documents} val"),
        ("tokens", f"{report.train_tokens} train / {report.validation_tokens} val"),
        ("vocabulary", report.vocab_size),
    ]
    fields.extend(("undecodable", f) for f in report.undecodable_files)
    print_fields(fields)


@data.command("list")
@lattice_command
def list_datasets(session: Session) -> None:
    """List datasets, newest first."""
    found = session.client().list_datasets()
    rows = [_row(d) for d in found]
    session.emit(
        found,
        lambda: print_table(["id", "documents", "train tokens", "vocab", "created"], rows),
    )


def _row(d: trainer_pb2.Dataset) -> tuple[object, ...]:
    report = d.report
    return (d.id, report.documents_out, report.train_tokens, report.vocab_size, when(d.create_time))


@data.command("show")
@click.argument("dataset_id")
@lattice_command
def show_dataset(session: Session, dataset_id: str) -> None:
    """Show one dataset and its preparation report."""
    dataset = session.client().get_dataset(dataset_id)
    session.emit(dataset, lambda: _show(dataset))
