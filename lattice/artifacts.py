"""Artifacts as bytes: a model directory packed into a reproducible tar.

The same directory always packs to the same bytes (sorted entries, zeroed
times and owners), so its sha256 identifies its content and the registry's
content-addressed store keeps one copy. Unpacking refuses paths that escape
the target directory.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

CHUNK_BYTES = 1024 * 1024
CONTENT_TYPE = "application/x-tar"


def pack_directory(directory: str | os.PathLike[str]) -> bytes:
    """Pack every regular file under `directory` into deterministic tar bytes."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with path.open("rb") as handle:
                archive.addfile(info, handle)
    return buffer.getvalue()


def unpack_to(data: bytes, directory: str | os.PathLike[str]) -> Path:
    """Unpack tar bytes into `directory` (created), refusing unsafe members."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
        archive.extractall(target, filter="data")
    return target


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def iter_chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Split bytes into upload/download chunks."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
