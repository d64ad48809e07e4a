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
    #: Set when the record cannot become a document ("malformed", "missing_field",
    #: "missing_label").
    problem: str = ""
    #: The record's label, for sources with a label_field.
    label: str = ""


@dataclasses.dataclass
class ReadStats:
    invalid_bytes: int = 0
    #: "path: encoding" of files that failed their declared encoding.
    undecodable_files: list[str] = dataclasses.field(default_factory=list)


def _field(index: int, name: str) -> str:
    return f"spec.sources[{index}].{name}"


def _shown(raw: str) -> str:
    """A client's path as echoed in an error: printable and short."""
    shown = raw if len(raw) <= 120 else raw[:117] + "..."
    return repr(shown)


def resolve_files(index: int, source: trainer_pb2.DataSource, confine: Confinement) -> list[Path]:
    """The files a path source names, resolved inside the source roots and sorted;
    InvalidArgument if there are none or the path cannot be looked at (too long,
    not a name at all), PermissionDenied for anything outside the roots."""
    try:
        return _resolve_files(index, source, confine)
    except (OSError, ValueError) as error:  # ENAMETOOLONG, EACCES, embedded NUL ...
        reason = getattr(error, "strerror", None) or "not a usable path"
        raise InvalidArgument(
            _field(index, "path"), f"{_shown(source.path)}: {reason.lower()}"
        ) from None


def _resolve_files(index: int, source: trainer_pb2.DataSource, confine: Confinement) -> list[Path]:
    raw = source.path
    field = _field(index, "path")
    files = confine.expand(raw, field, SUFFIXES)
    if not files and not any(ch in raw for ch in "*?["):
        path = confine.candidate(raw)
        if not os.path.lexists(path):
            raise InvalidArgument(field, f"{_shown(raw)}: no such file or directory")
        if not path.is_dir():
            raise InvalidArgument(
                field, f"{_shown(raw)}: unsupported file type (use .txt/.jsonl/.csv)"
            )
    if not files:
        raise InvalidArgument(
            _field(index, "path"), f"{_shown(raw)}: matches no .txt/.jsonl/.csv file"
        )
    return files


def validate_sources(sources: Sequence[trainer_pb2.DataSource], confine: Confinement) -> None:
    """Fail fast, before any work, on sources that cannot be read."""
    if not sources:
        raise InvalidArgument("spec.sources", "at least one source is required")
    if len({bool(source.label_field) for source in document_sources(sources)}) > 1:
        raise InvalidArgument("spec.sources", "set label_field on every document source or on none")
    for index, source in enumerate(sources):
        kind = source.WhichOneof("source")
        if kind is None:
            raise InvalidArgument(_field(index, "source"), "set path or builtin")
        if source.role not in trainer_pb2.DataSourceRole.values():
            raise InvalidArgument(_field(index, "role"), f"unknown role {source.role}")
        if kind == "builtin" and source.role != trainer_pb2.DATA_SOURCE_ROLE_UNSPECIFIED:
            raise InvalidArgument(_field(index, "role"), "only a path source can hold word lists")
        if kind == "builtin" and source.builtin not in BUILTIN_SOURCES:
            raise InvalidArgument(
                _field(index, "builtin"),
                f"unknown built-in {source.builtin!r}; known: {', '.join(BUILTIN_SOURCES)}",
            )
        if source.label_field and source.role != trainer_pb2.DATA_SOURCE_ROLE_UNSPECIFIED:
            raise InvalidArgument(_field(index, "label_field"), "word lists have no labels")
        if kind == "path":
            files = resolve_files(index, source, confine)
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
    sources: Sequence[trainer_pb2.DataSource], stats: ReadStats, confine: Confinement
) -> Iterator[RawDocument]:
    """Every raw document of every source, in a stable order."""
    for index, source in enumerate(sources):
        if source.role != trainer_pb2.DATA_SOURCE_ROLE_UNSPECIFIED:
            continue
        if source.WhichOneof("source") == "builtin":
            for origin, text in builtin_documents(source.builtin):
                yield RawDocument(text, origin, "utf-8")
            continue
        field = source.text_field or "text"
        for path in resolve_files(index, source, confine):
            data = confine.read_bytes(path, _field(index, "path"))
            decoded = decode_bytes(data, source.encoding)
            stats.invalid_bytes += decoded.invalid_bytes
            documents = _split_file(path, decoded.text, decoded.encoding, field, source.label_field)
            if source.encoding and decoded.invalid_bytes:
                # Honour the declaration: report the file, do not keep replaced text.
                stats.undecodable_files.append(f"{path}: {source.encoding}")
                for document in documents:
                    yield dataclasses.replace(document, problem="undecodable")
                continue
            yield from documents


def read_lines(
    sources: Sequence[trainer_pb2.DataSource], role: int, confine: Confinement
) -> list[str]:
    """The non-blank lines of every path source with `role` (dictionaries, word lists)."""
    lines: list[str] = []
    for index, source in enumerate(sources):
        if source.role != role or source.WhichOneof("source") != "path":
            continue
        for path in resolve_files(index, source, confine):
            data = confine.read_bytes(path, _field(index, "path"))
            text = decode_bytes(data, source.encoding).text
            lines.extend(line.strip() for line in text.splitlines() if line.strip())
    return lines


def document_sources(
    sources: Sequence[trainer_pb2.DataSource],
) -> list[trainer_pb2.DataSource]:
    """The sources that hold documents (not word lists)."""
    return [s for s in sources if s.role == trainer_pb2.DATA_SOURCE_ROLE_UNSPECIFIED]


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
