"""Where PrepareDataset may read: only regular files under the trainer's source roots.

A tenant names its sources as paths. Without confinement that is a read of any file
the trainer can read (a secrets file comes back through dataset, training and
generation). So every path is resolved (symlinks followed, `..` collapsed) and only
then checked against the roots; a directory walk checks every entry the same way and
never descends through a symlink; only regular files are opened, never a FIFO or a
device (opening one could block or read without end). Anything outside, or not a
regular file, is PERMISSION_DENIED before a single byte is read: the checks run in
validation, ahead of the pipeline, and again on each read.

Roots come from the `source_root` setting; `{tenant}` in a root stands for the
caller's tenant, and the default is `<data-dir>/sources/{tenant}`, so each tenant
reads only its own directory. A relative source path is taken under the first root.
Reads open the resolved path with O_NOFOLLOW and O_NONBLOCK and check the opened
file is regular (`fstat`), so a file swapped for a link or a FIFO after the check is
refused rather than followed.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from lattice.errors import PermissionDenied

TENANT_PLACEHOLDER = "{tenant}"
#: Default source root under the trainer's data directory.
DEFAULT_ROOT = "sources/" + TENANT_PLACEHOLDER


class SourceRoots:
    """The configured roots, before a tenant is known."""

    def __init__(self, roots: Sequence[str | Path], *, max_files: int = 100_000) -> None:
        if not roots:
            raise ValueError("at least one source root is needed")
        self._roots = [str(root) for root in roots]
        self.max_files = max_files

    @classmethod
    def default(cls, data_dir: Path, configured: Sequence[str], max_files: int) -> SourceRoots:
        """`configured` roots, or `<data_dir>/sources/{tenant}` when there are none."""
        return cls(configured or [str(data_dir / DEFAULT_ROOT)], max_files=max_files)

    def for_tenant(self, tenant: str) -> Confinement:
        if not tenant or "/" in tenant or tenant in (".", "..") or "\0" in tenant:
            raise PermissionDenied("this tenant name cannot own a source directory")
        roots = [Path(root.replace(TENANT_PLACEHOLDER, tenant)) for root in self._roots]
        return Confinement(tuple(root.resolve() for root in roots), self.max_files)


@dataclasses.dataclass(frozen=True)
class Confinement:
    """The resolved roots one caller may read under."""

    roots: tuple[Path, ...]
    max_files: int = 100_000

    @property
    def home(self) -> Path:
        """Where relative source paths are taken from."""
        return self.roots[0]

    def inside(self, real: Path) -> bool:
        return any(real == root or real.is_relative_to(root) for root in self.roots)

    def _denied(self, field: str, raw: str, why: str) -> PermissionDenied:
        return PermissionDenied(
            f"{field}: {raw!r} {why}; sources are read only under {self._where()}"
        )

    def _where(self) -> str:
        return ", ".join(str(root) for root in self.roots)

    def check(self, path: Path, field: str, raw: str) -> Path:
        """The resolved path if it is inside the roots, else PERMISSION_DENIED."""
        real = path.resolve()
        if not self.inside(real):
            raise self._denied(field, raw, "is outside the trainer's source roots")
        return real

    def candidate(self, raw: str) -> Path:
        path = Path(raw)
        return path if path.is_absolute() else self.home / path

    def expand(self, raw: str, field: str, suffixes: Iterable[str]) -> list[Path]:
        """Every readable file `raw` names (a file, a directory, or a glob), resolved and
        checked, sorted. Raises PERMISSION_DENIED for anything outside or not regular;
        returns [] when nothing matches (the caller words that)."""
        suffixes = tuple(suffixes)
        if any(ch in raw for ch in "*?["):
            if ".." in Path(raw).parts:
                raise self._denied(field, raw, "climbs out with '..'")
            pattern = str(self.candidate(raw))
            found = [Path(p) for p in glob.iglob(pattern, recursive=True)]
            return self._files(found, field, raw, suffixes, walk=False)
        path = self.candidate(raw)
        real = self.check(path, field, raw)
        if not os.path.lexists(real):
            return []
        mode = os.stat(real).st_mode
        if stat.S_ISDIR(mode):
            return self._walk(real, field, raw, suffixes)
        if not stat.S_ISREG(mode):
            raise self._denied(field, raw, "is not a regular file")
        return [real]

    def _walk(self, top: Path, field: str, raw: str, suffixes: tuple[str, ...]) -> list[Path]:
        found: list[Path] = []
        for directory, dirnames, filenames in os.walk(top, followlinks=False):
            base = Path(directory)
            for name in dirnames:  # symlinked directories are not descended into...
                entry = base / name
                if entry.is_symlink():
                    self.check(entry, field, f"{raw}/{entry.relative_to(top)}")  # ...nor may leave
            found.extend(base / name for name in filenames)
            if len(found) > self.max_files:
                raise self._denied(field, raw, f"holds more than {self.max_files} files")
        return self._files(found, field, raw, suffixes, walk=True, top=top)

    def _files(
        self,
        paths: list[Path],
        field: str,
        raw: str,
        suffixes: tuple[str, ...],
        *,
        walk: bool,
        top: Path | None = None,
    ) -> list[Path]:
        if len(paths) > self.max_files:
            raise self._denied(field, raw, f"matches more than {self.max_files} files")
        files: list[Path] = []
        for path in paths:
            shown = f"{raw}/{path.relative_to(top)}" if walk and top is not None else str(path)
            real = self.check(path, field, shown)
            mode = os.stat(real).st_mode
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise self._denied(field, shown, "is not a regular file")
            if real.suffix.lower() in suffixes:
                files.append(real)
        return sorted(set(files))

    def read_bytes(self, path: Path, field: str) -> bytes:
        """Read a file `expand` returned, refusing it if it changed into a link or a FIFO."""
        real = self.check(path, field, str(path))
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags)
        except OSError as error:
            raise self._denied(field, str(path), f"cannot be opened ({error.strerror})") from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise self._denied(field, str(path), "is not a regular file")
            return handle.read()
