"""Content-addressed artifact files under the data directory.

A blob lives at `<root>/sha256/<d[:2]>/<digest>`. An upload streams into a
temporary file in `<root>/tmp` while hashing; only when the size and sha256
match what the client declared is the file fsynced and atomically renamed
into place (then the directory is fsynced). Anything else removes the
temporary file, so a refused or interrupted upload leaves nothing behind.
The same bytes uploaded twice are stored once. With encryption at rest on,
new blobs are stored sealed as `<digest>.sealed` (see `services.runtime.at_rest`); blobs of
either kind stay readable whatever the setting. The registry's signature of
a blob lives beside it as `<digest>.sig` (see `services.runtime.signatures`).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from lattice.errors import InvalidArgument, NotFound
from services.registry.validation import DIGEST_PATTERN
from services.runtime.at_rest import SUFFIX, AtRest, BrokenBlob

URI_PREFIX = "lattice-artifact://sha256/"
READ_CHUNK_BYTES = 1024 * 1024


def artifact_uri(digest: str) -> str:
    return URI_PREFIX + digest


def digest_from_reference(reference: str, field: str) -> str:
    """Accept a bare digest or a lattice-artifact URI; return the digest."""
    digest = reference[len(URI_PREFIX) :] if reference.startswith(URI_PREFIX) else reference
    if not DIGEST_PATTERN.match(digest):
        raise InvalidArgument(
            field, f"must be a lower-case hex sha256 digest or a {URI_PREFIX}<digest> URI"
        )
    return digest


@dataclasses.dataclass(frozen=True)
class StoredArtifact:
    digest: str
    size_bytes: int
    created: bool


class ArtifactStore:
    """Blobs by sha256 on the local file system."""

    def __init__(self, root: Path, at_rest: AtRest | None = None, *, encrypt: bool = False) -> None:
        """`at_rest` opens sealed blobs; with `encrypt`, new blobs are sealed with it."""
        if encrypt and at_rest is None:
            raise ValueError("encryption at rest needs the key ring (at_rest)")
        self.root = root
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._at_rest = at_rest
        self._encrypt = encrypt

    def prepare(self) -> None:
        """Create the directories and drop leftovers of uploads cut short by a crash."""
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)

    def path(self, digest: str) -> Path:
        return self._blobs / digest[:2] / digest

    def _sealed(self, digest: str) -> Path:
        return self.path(digest).with_name(digest + SUFFIX)

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file() or self._sealed(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            pass
        try:
            with self._sealed(digest).open("rb") as handle:
                return AtRest.plaintext_size(handle)
        except FileNotFoundError:
            raise NotFound(f"artifact sha256:{digest} is not stored") from None

    async def write(
        self, digest: str, size_bytes: int, chunks: AsyncIterator[bytes], *, field: str = "chunk"
    ) -> StoredArtifact:
        """Receive `chunks`, verify size and digest, then store atomically."""
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        hasher = hashlib.sha256()
        received = 0
        sealer = (
            self._at_rest.writer(digest, size_bytes) if self._at_rest and self._encrypt else None
        )
        try:
            with tmp.open("wb") as handle:
                if sealer is not None:
                    handle.write(sealer.header)
                async for chunk in chunks:
                    received += len(chunk)
                    if received > size_bytes:
                        raise InvalidArgument(
                            "header.size_bytes",
                            f"received more than the declared {size_bytes} bytes",
                        )
                    hasher.update(chunk)
                    handle.write(chunk if sealer is None else sealer.frame(chunk))
                if received != size_bytes:
                    raise InvalidArgument(
                        "header.size_bytes",
                        f"declared {size_bytes} bytes but received {received}",
                    )
                actual = hasher.hexdigest()
                if actual != digest:
                    raise InvalidArgument(
                        "header.digest",
                        f"declared sha256 {digest} but the bytes hash to {actual}",
                    )
                if sealer is not None:
                    handle.write(sealer.end())
                handle.flush()
                await asyncio.to_thread(os.fsync, handle.fileno())
            if self.exists(digest):
                return StoredArtifact(digest, size_bytes, created=False)
            final = self.path(digest) if sealer is None else self._sealed(digest)
            await asyncio.to_thread(self._publish, tmp, final)
            return StoredArtifact(digest, size_bytes, created=True)
        finally:
            tmp.unlink(missing_ok=True)

    def _publish(self, tmp: Path, final: Path) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _signature_path(self, digest: str) -> Path:
        return self._blobs / digest[:2] / f"{digest}.sig"

    def read_signature(self, digest: str) -> tuple[str, bytes] | None:
        """(key id, signature) stored beside the blob, or None if it was never signed."""
        try:
            record = json.loads(self._signature_path(digest).read_text())
            return str(record["kid"]), base64.b64decode(record["signature"], validate=True)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: signed again on the next download

    def write_signature(self, digest: str, kid: str, signature: bytes) -> None:
        """Store the registry's signature beside the blob (atomically)."""
        path = self._signature_path(digest)
        staging = self._tmp / f"{uuid.uuid4().hex}.sig"
        staging.write_text(
            json.dumps({"kid": kid, "signature": base64.b64encode(signature).decode()})
        )
        os.replace(staging, path)

    async def read(self, digest: str, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """Yield the blob's bytes in chunks (reads run off the event loop)."""
        if not self.path(digest).is_file() and self._sealed(digest).is_file():
            async for chunk in self._read_sealed(digest):
                yield chunk
            return
        handle = await asyncio.to_thread(self.path(digest).open, "rb")
        try:
            while True:
                chunk = await asyncio.to_thread(handle.read, chunk_bytes)
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    async def _read_sealed(self, digest: str) -> AsyncIterator[bytes]:
        if self._at_rest is None:
            raise BrokenBlob(f"artifact sha256:{digest} is sealed and no key ring is configured")
        handle = await asyncio.to_thread(self._sealed(digest).open, "rb")
        try:
            frames = self._at_rest.frames(handle, digest, f"artifact sha256:{digest}")
            while (chunk := await asyncio.to_thread(next, frames, None)) is not None:
                yield chunk
        finally:
            handle.close()
