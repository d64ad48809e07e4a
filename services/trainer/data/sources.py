"""Where raw documents come from: files, directories, globs, built-in corpora.

A `.txt` file holds one document per paragraph (blank-line separated); a
`.jsonl` file one per line (the `text_field` of each object); a `.csv` file one
per row (the `text_field` column). Problems with a single record are counted as
drops, never raised; a source that does not exist is an `InvalidArgument`.

Paths are confined to the caller's source roots (`confine.Confinement`): a path
outside them, a symlink out or a file that is not regular is PERMISSION_DENIED,
found while validating, before anything is read.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from lattice.errors import InvalidArgument
from lattice.v1 import trainer_pb2
from services.trainer.data.builtin import BUILTIN_SOURCES, builtin_documents
from services.trainer.data.confine import Confinement
from services.trainer.data.decoding import decode_bytes

SUFFIXES = (".txt", ".jsonl", ".csv")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


@dataclasses.dataclass
class RawDocument:
    """A document before cleaning, or a record that was already unusable."""

    text: str
    origin: str
    encoding: str = "utf-8"
    #: Set when the record cannot become a document ("malformed", "missing_field").
    problem: str = ""


@dataclasses.dataclass
class ReadStats:
    invalid_bytes: int = 0


def _field(index: int, name: str) -> str:
    return f"spec.sources[{index}].{name}"


def resolve_files(index: int, source: trainer_pb2.DataSource, confine: Confinement) -> list[Path]:
    """The files a path source names, resolved inside the source roots and sorted;
    InvalidArgument if there are none, PermissionDenied for anything outside."""
    raw = source.path
    field = _field(index, "path")
    files = confine.expand(raw, field, SUFFIXES)
    if not files and not any(ch in raw for ch in "*?["):
        path = confine.candidate(raw)
        if not os.path.lexists(path):
            raise InvalidArgument(field, f"{raw}: no such file or directory")
        if not path.is_dir():
            raise InvalidArgument(field, f"{raw}: unsupported file type (use .txt/.jsonl/.csv)")
    if not files:
        raise InvalidArgument(_field(index, "path"), f"{raw}: matches no .txt/.jsonl/.csv file")
    return files


def validate_sources(sources: Sequence[trainer_pb2.DataSource], confine: Confinement) -> None:
    """Fail fast, before any work, on sources that cannot be read."""
    if not sources:
        raise InvalidArgument("spec.sources", "at least one source is required")
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
            resolve_files(index, source, confine)
        if source.encoding:
            try:
                codecs.lookup(source.encoding)
            except LookupError:
                raise InvalidArgument(
                    _field(index, "encoding"), f"unknown encoding {source.encoding!r}"
                ) from None


def read_sources(
    sources: Sequence[trainer_pb2.DataSource], stats: ReadStats, confine: Confinement
) -> Iterator[RawDocument]:
    """Every raw document of every source, in a stable order."""
    for index, source in enumerate(sources):
        if source.WhichOneof("source") == "builtin":
            for origin, text in builtin_documents(source.builtin):
                yield RawDocument(text, origin, "utf-8")
            continue
        field = source.text_field or "text"
        for path in resolve_files(index, source, confine):
            data = confine.read_bytes(path, _field(index, "path"))
            decoded = decode_bytes(data, source.encoding)
            stats.invalid_bytes += decoded.invalid_bytes
            yield from _split_file(path, decoded.text, decoded.encoding, field)


def _split_file(path: Path, text: str, encoding: str, field: str) -> Iterator[RawDocument]:
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
            yield RawDocument(value, origin, encoding)
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        for row in reader:
            value = row.get(field)
            if value is None:
                yield RawDocument("", origin, encoding, problem="missing_field")
                continue
            yield RawDocument(value, origin, encoding)
