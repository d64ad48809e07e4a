"""Where raw documents come from: files, directories, globs, built-in corpora.

A `.txt` file holds one document per paragraph (blank-line separated); a
`.jsonl` file one per line (the `text_field` of each object); a `.csv` file one
per row (the `text_field` column). Problems with a single record are counted as
drops, never raised; a source that does not exist is an `InvalidArgument`.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import glob
import io
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from lattice.errors import InvalidArgument
from lattice.v1 import trainer_pb2
from services.trainer.data.builtin import BUILTIN_SOURCES, builtin_documents
from services.trainer.data.decoding import decode_bytes

SUFFIXES = (".txt", ".jsonl", ".csv")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


@dataclasses.dataclass
class RawDocument:
    """A document before cleaning, or a record that was already unusable."""

    text: str
    origin: str
    encoding: str = "utf-8"
    #: Set when the record cannot become a document ("malformed", "missing_field",
    #: "missing_label").
    problem: str = ""
    #: The record's label, for sources with a label_field.
    label: str = ""


@dataclasses.dataclass
class ReadStats:
    invalid_bytes: int = 0


def _field(index: int, name: str) -> str:
    return f"spec.sources[{index}].{name}"


def resolve_files(index: int, source: trainer_pb2.DataSource) -> list[Path]:
    """The files a path source names, sorted; InvalidArgument if there are none."""
    raw = source.path
    if any(ch in raw for ch in "*?["):
        matches = sorted(Path(p) for p in glob.glob(raw, recursive=True))
        files = [p for p in matches if p.is_file() and p.suffix.lower() in SUFFIXES]
    else:
        path = Path(raw)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
            )
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise InvalidArgument(
                    _field(index, "path"), f"{raw}: unsupported file type (use .txt/.jsonl/.csv)"
                )
            files = [path]
        else:
            raise InvalidArgument(_field(index, "path"), f"{raw}: no such file or directory")
    if not files:
        raise InvalidArgument(_field(index, "path"), f"{raw}: matches no .txt/.jsonl/.csv file")
    return files


def validate_sources(sources: Sequence[trainer_pb2.DataSource]) -> None:
    """Fail fast, before any work, on sources that cannot be read."""
    if not sources:
        raise InvalidArgument("spec.sources", "at least one source is required")
    if len({bool(source.label_field) for source in sources}) > 1:
        raise InvalidArgument("spec.sources", "set label_field on every source or on none")
    for index, source in enumerate(sources):
        kind = source.WhichOneof("source")
        if kind is None:
            raise InvalidArgument(_field(index, "source"), "set path or builtin")
        if kind == "builtin" and source.builtin not in BUILTIN_SOURCES:
            raise InvalidArgument(
                _field(index, "builtin"),
                f"unknown built-in {source.builtin!r}; known: {', '.join(BUILTIN_SOURCES)}",
            )
        if kind == "path":
            files = resolve_files(index, source)
            if source.label_field and any(f.suffix.lower() == ".txt" for f in files):
                raise InvalidArgument(
                    _field(index, "label_field"), "labels need .jsonl or .csv files, not .txt"
                )
        if kind == "builtin" and source.label_field:
            raise InvalidArgument(_field(index, "label_field"), "built-in corpora have no labels")
        if source.encoding:
            try:
                codecs.lookup(source.encoding)
            except LookupError:
                raise InvalidArgument(
                    _field(index, "encoding"), f"unknown encoding {source.encoding!r}"
                ) from None


def read_sources(
    sources: Sequence[trainer_pb2.DataSource], stats: ReadStats
) -> Iterator[RawDocument]:
    """Every raw document of every source, in a stable order."""
    for index, source in enumerate(sources):
        if source.WhichOneof("source") == "builtin":
            for origin, text in builtin_documents(source.builtin):
                yield RawDocument(text, origin, "utf-8")
            continue
        field = source.text_field or "text"
        for path in resolve_files(index, source):
            decoded = decode_bytes(path.read_bytes(), source.encoding)
            stats.invalid_bytes += decoded.invalid_bytes
            yield from _split_file(path, decoded.text, decoded.encoding, field, source.label_field)


def _label(record: dict, label_field: str) -> str | None:
    """The record's label as text (strings and integers), None when missing."""
    value = record.get(label_field)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value).strip() or None


def _split_file(
    path: Path, text: str, encoding: str, field: str, label_field: str = ""
) -> Iterator[RawDocument]:
    suffix = path.suffix.lower()
    origin = str(path)
    if suffix == ".txt":
        for paragraph in _PARAGRAPH.split(text.replace("\r\n", "\n").replace("\r", "\n")):
            if paragraph.strip():
                yield RawDocument(paragraph, origin, encoding)
    elif suffix == ".jsonl":
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                yield RawDocument("", origin, encoding, problem="malformed")
                continue
            value = record.get(field) if isinstance(record, dict) else None
            if not isinstance(value, str):
                yield RawDocument("", origin, encoding, problem="missing_field")
                continue
            label = _label(record, label_field) if label_field else ""
            if label is None:
                yield RawDocument("", origin, encoding, problem="missing_label")
                continue
            yield RawDocument(value, origin, encoding, label=label)
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            value = row.get(field)
            if value is None:
                yield RawDocument("", origin, encoding, problem="missing_field")
                continue
            label = _label(row, label_field) if label_field else ""
            if label is None:
                yield RawDocument("", origin, encoding, problem="missing_label")
                continue
            yield RawDocument(value, origin, encoding, label=label)
