"""UploadSources: a tenant's local files into its own source directory.

Files land under the caller's first source root (`<data-dir>/sources/<tenant>/`
by default), the only place PrepareDataset reads, so a CLI on another machine
can prepare from local files. An upload is built in a hidden staging
directory next to its target and swapped in only when every file arrived with
exactly its declared size: a broken or refused upload leaves nothing behind.
Files are created with O_EXCL and O_NOFOLLOW, names are relative, without
`..`, and only the suffixes preparation reads. Limits: bytes per file, files
and bytes per upload (INVALID_ARGUMENT naming the field), and bytes a tenant
keeps in total (RESOURCE_EXHAUSTED). Disk writes run in the trainer's
worker pool, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import Any

from lattice.errors import InvalidArgument, ResourceExhausted
from lattice.v1 import trainer_pb2
from services.runtime.identity import Caller
from services.trainer.data.confine import SourceRoots
from services.trainer.data.sources import SUFFIXES

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STAGING = ".upload-"


@dataclasses.dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int = 256 * 1024**2
    max_upload_bytes: int = 1024**3
    max_upload_files: int = 10_000
    #: Everything a tenant keeps under its source directory.
    max_tenant_bytes: int = 10 * 1024**3


def relative(raw: str, field: str, *, file: bool) -> PurePosixPath:
    """A safe relative path: plain segments, no '..', no absolute, no hidden names."""
    path = PurePosixPath(raw)
    if not raw or path.is_absolute() or not path.parts or len(raw) > 1024:
        raise InvalidArgument(field, "required: a relative path such as corpus/part-1.txt")
    if not all(_SEGMENT.match(part) for part in path.parts):
        raise InvalidArgument(
            field, f"{raw[:80]!r}: use letters, digits, '.', '_' and '-' (no '..' or hidden names)"
        )
    if file and path.suffix.lower() not in SUFFIXES:
        raise InvalidArgument(field, f"{raw[:80]!r}: only {', '.join(SUFFIXES)} files are read")
    return path


def _used_bytes(home: Path, excluding: Path) -> int:
    total = 0
    for directory, dirnames, filenames in os.walk(home, followlinks=False):
        if Path(directory) == excluding:
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if Path(directory, d) != excluding]
        for name in filenames:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:
                continue
    return total


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` with `staging` (a rename each way; the old copy is removed)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f"{_STAGING}old-{uuid.uuid4().hex}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


class SourceUploads:
    """Receives UploadSources streams for the trainer."""

    def __init__(
        self,
        roots: SourceRoots,
        off_loop: Callable[..., Awaitable[Any]],
        limits: UploadLimits = UploadLimits(),
    ) -> None:
        self._roots = roots
        self._off_loop = off_loop
        self.limits = limits

    async def upload(
        self,
        caller: Caller,
        target: trainer_pb2.UploadTarget,
        messages: AsyncIterator[trainer_pb2.UploadSourcesRequest],
    ) -> trainer_pb2.UploadSourcesResponse:
        directory = relative(target.directory, "target.directory", file=False)
        home = self._roots.for_tenant(caller.tenant).home
        await self._off_loop(home.mkdir, parents=True, exist_ok=True)
        staging = home / f"{_STAGING}{uuid.uuid4().hex}"
        await self._off_loop(staging.mkdir)
        try:
            files, total = await self._receive(staging, messages)
            destination = home / directory
            used = await self._off_loop(_used_bytes, home, destination)
            if used + total > self.limits.max_tenant_bytes:
                raise ResourceExhausted(
                    f"tenant {caller.tenant!r} would keep {used + total} bytes of sources, more "
                    f"than its {self.limits.max_tenant_bytes}; delete or replace some first",
                    subject=f"tenant:{caller.tenant}",
                    quota="source bytes",
                )
            await self._off_loop(_swap_in, staging, destination)
        except BaseException:
            await self._off_loop(shutil.rmtree, staging, ignore_errors=True)
            raise
        return trainer_pb2.UploadSourcesResponse(
            directory=str(directory), files=files, size_bytes=total
        )

    async def _receive(
        self, staging: Path, messages: AsyncIterator[trainer_pb2.UploadSourcesRequest]
    ) -> tuple[int, int]:
        limits = self.limits
        files = total = 0
        handle: Any = None
        expected = received = 0
        name = ""
        try:
            async for message in messages:
                kind = message.WhichOneof("payload")
                if kind == "file":
                    if handle is not None:
                        await self._close(handle, name, expected, received)
                    files += 1
                    if files > limits.max_upload_files:
                        raise InvalidArgument(
                            "file", f"more than {limits.max_upload_files} files in one upload"
                        )
                    path = relative(message.file.path, "file.path", file=True)
                    expected, received, name = message.file.size_bytes, 0, str(path)
                    if not 0 <= expected <= limits.max_file_bytes:
                        raise InvalidArgument(
                            "file.size_bytes",
                            f"{name}: must be within 0..{limits.max_file_bytes} bytes",
                        )
                    if total + expected > limits.max_upload_bytes:
                        raise InvalidArgument(
                            "file.size_bytes",
                            f"the upload is larger than {limits.max_upload_bytes} bytes",
                        )
                    total += expected
                    try:
                        handle = await self._off_loop(_create, staging / path)
                    except FileExistsError:
                        raise InvalidArgument("file.path", f"{name}: sent twice") from None
                elif kind == "chunk":
                    if handle is None:
                        raise InvalidArgument("chunk", "bytes before any file header")
                    received += len(message.chunk)
                    if received > expected:
                        raise InvalidArgument("chunk", f"{name}: more bytes than size_bytes")
                    await self._off_loop(handle.write, message.chunk)
                else:
                    raise InvalidArgument("target", "only the first message may name the target")
            if handle is not None:
                await self._close(handle, name, expected, received)
                handle = None
        finally:
            if handle is not None:
                await self._off_loop(handle.close)
        if not files:
            raise InvalidArgument("file", "an upload needs at least one file")
        return files, total

    async def _close(self, handle: Any, name: str, expected: int, received: int) -> None:
        await self._off_loop(handle.close)
        if received != expected:
            raise InvalidArgument(
                "file.size_bytes", f"{name}: declared {expected} bytes, received {received}"
            )


def _create(path: Path) -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o640), "wb")
