"""Prepared datasets encrypted at rest (optional, `encrypt_datasets_at_rest`).

A dataset holds its tenant's corpus: the cleaned text, its token streams and
the tokenizer trained on it. With the setting on, `DatasetStore.commit` seals
every file of a new dataset (the shared `services.runtime.at_rest` format,
under the key ring's dataset purpose) before it is moved into place, and
drops a `SEALED_MARKER` file beside them. The dataset's digest and id are
computed over the plaintext first, so preparing the same data again still
finds the same dataset. Only the `dataset.binpb` record (names, counts, no
text) stays plain.

Readers go through `DatasetFiles`, which opens sealed and plain datasets
alike: the job validation in the service and the training workers (which
read the key ring named in their job config). A dataset sealed under a key
this ring lacks, or damaged on disk, is refused with a clear
FAILED_PRECONDITION, never read as garbage.

Each file's associated data names the dataset id and the file's path, so a
file cannot be moved into another dataset or renamed without failing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lattice.errors import FailedPrecondition
from services.runtime.at_rest import AtRest
from services.runtime.keys import PURPOSE_DATASET_AT_REST, KeyManager

#: Present in a dataset directory whose files are sealed.
SEALED_MARKER = "sealed-at-rest"
#: Files never sealed: the record (metadata only) and the marker itself.
PLAIN = frozenset({"dataset.binpb", SEALED_MARKER})


def _name(dataset_id: str, relative: str) -> str:
    return f"dataset {dataset_id}/{relative}"


def _files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.relative_to(directory).as_posix() not in PLAIN
    )


class DatasetSealer:
    """Seals a staged dataset's files under the key ring's dataset key."""

    def __init__(self, keys: KeyManager) -> None:
        self._at_rest = AtRest(keys, PURPOSE_DATASET_AT_REST, "dataset file")

    def seal(self, directory: Path, dataset_id: str) -> None:
        """Seal every file in `directory` (the dataset `dataset_id`) in place."""
        for path in _files(directory):
            self._at_rest.seal_file(path, _name(dataset_id, path.relative_to(directory).as_posix()))
        (directory / SEALED_MARKER).write_text("1\n")


class DatasetFiles:
    """One dataset's files as plaintext, whether they are sealed on disk or not.

    `keys` may be None for a plain dataset; a sealed one then fails with a
    message saying the key ring is needed.
    """

    def __init__(self, directory: Path, keys: KeyManager | None) -> None:
        self.directory = directory
        self.sealed = (directory / SEALED_MARKER).is_file()
        self._at_rest = AtRest(keys, PURPOSE_DATASET_AT_REST, "dataset file") if keys else None

    def _opener(self) -> AtRest:
        if self._at_rest is None:
            raise FailedPrecondition(
                f"dataset {self.directory.name} is encrypted at rest and no key ring is configured"
            )
        return self._at_rest

    def _label(self, relative: str) -> str:
        return f"file {relative} of dataset {self.directory.name}"

    def read_bytes(self, relative: str) -> bytes:
        path = self.directory / relative
        if not self.sealed:
            return path.read_bytes()
        with path.open("rb") as handle:
            frames = self._opener().frames(
                handle, _name(self.directory.name, relative), self._label(relative)
            )
            return b"".join(frames)

    def read_text(self, relative: str) -> str:
        return self.read_bytes(relative).decode("utf-8")

    def size(self, relative: str) -> int:
        """The plaintext size of a file (its header says, for a sealed one)."""
        path = self.directory / relative
        if not self.sealed:
            return path.stat().st_size
        return self._opener().size_of(path)

    def plain_directory(self, relative: str, scratch: Path) -> Path:
        """A directory holding the plaintext of `relative` (a directory of the dataset).

        A plain dataset's own directory; for a sealed one, a private copy under
        `scratch` (for libraries that only load from files, such as a tokenizer;
        what it holds ships in the trained model anyway).
        """
        source = self.directory / relative
        if not self.sealed:
            return source
        target = scratch / relative
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True, mode=0o700)
        for path in _files(source):
            inner = path.relative_to(self.directory).as_posix()
            out = target / path.relative_to(source)
            out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(self.read_bytes(inner))
        return target
