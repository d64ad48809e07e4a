"""Data encrypted at rest: AES-GCM frames under a key from the key ring.

One format for everything a service keeps sealed on disk: the registry's
artifacts (`encrypt_artifacts_at_rest`) and the trainer's prepared datasets
(`encrypt_datasets_at_rest`), each under its own key purpose. A sealed file:

    MAGIC | len(kid) | kid | plaintext size (8 bytes) | frame ... | end frame
    frame = len(ciphertext) (4 bytes) | nonce (12) | ciphertext+tag

Each frame is one chunk. Its associated data names the file (`name`: the
artifact's digest, or a dataset's id and file path), the frame's index and
whether it is the last, so frames cannot be reordered, dropped, swapped
between files, or the file cut short without the read failing. The header is
authenticated too (it is the end frame's associated data). The key id in the
header keeps old files readable after `lattice keys rotate`; new files use the
newest key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lattice.errors import FailedPrecondition
from services.runtime.keys import PURPOSE_ARTIFACT_AT_REST, KeyManager, UnknownKey

MAGIC = b"LAR1"
SUFFIX = ".sealed"
#: Plaintext bytes per frame when sealing a whole file.
FILE_CHUNK = 1 << 20
_NONCE = 12
_LENGTH = struct.Struct(">I")
_SIZE = struct.Struct(">Q")


class BrokenBlob(FailedPrecondition):
    """A sealed file on disk that fails authentication (corrupted, tampered, wrong key)."""


def _aad(name: str, index: int, final: bool, header: bytes) -> bytes:
    tail = b"end:" + header if final else b"chunk"
    return f"{name}:{index}:".encode() + tail


def is_sealed(path: Path) -> bool:
    """Whether the file at `path` starts like a sealed file."""
    with path.open("rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


class FrameWriter:
    """Seals one file's chunks in order; `header` first, then `frame()`s, then `end()`."""

    def __init__(self, cipher: AESGCM, kid: str, name: str, size: int) -> None:
        self._cipher = cipher
        self._name = name
        self._index = 0
        encoded = kid.encode()
        self.header = MAGIC + bytes((len(encoded),)) + encoded + _SIZE.pack(size)

    def _frame(self, data: bytes, final: bool) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._cipher.encrypt(
            nonce, data, _aad(self._name, self._index, final, self.header)
        )
        self._index += 1
        return _LENGTH.pack(len(sealed)) + nonce + sealed

    def frame(self, chunk: bytes) -> bytes:
        return self._frame(chunk, final=False)

    def end(self) -> bytes:
        return self._frame(b"", final=True)


class AtRest:
    """Seals files as they are written and opens them as they are read.

    `purpose` picks the key ring's derived key (artifacts and datasets use
    different ones); `what` names the kind of file in error messages.
    """

    def __init__(
        self, keys: KeyManager, purpose: str = PURPOSE_ARTIFACT_AT_REST, what: str = "artifact"
    ) -> None:
        self._keys = keys
        self._purpose = purpose
        self._what = what
        self._ciphers: dict[str, AESGCM] = {}

    def _cipher(self, kid: str) -> AESGCM:
        cipher = self._ciphers.get(kid)
        if cipher is None:
            key = self._keys.find(self._purpose, kid)
            cipher = self._ciphers[kid] = AESGCM(key.material)
        return cipher

    def writer(self, name: str, size: int) -> FrameWriter:
        kid = self._keys.current(self._purpose).kid
        return FrameWriter(self._cipher(kid), kid, name, size)

    @staticmethod
    def plaintext_size(handle: BinaryIO) -> int:
        """The sealed file's plaintext size, from its header."""
        head = handle.read(len(MAGIC) + 1)
        if len(head) != len(MAGIC) + 1 or not head.startswith(MAGIC):
            raise BrokenBlob("stored file is not sealed")
        handle.read(head[-1])
        size = handle.read(_SIZE.size)
        if len(size) != _SIZE.size:
            raise BrokenBlob("stored file header is cut short")
        return _SIZE.unpack(size)[0]

    def frames(self, handle: BinaryIO, name: str, label: str = "") -> Iterator[bytes]:
        """The plaintext chunks of the sealed file in `handle` (blocking reads).

        `label` names the file in errors (default: `<what> <name>`)."""
        label = label or f"{self._what} {name}"
        head = handle.read(len(MAGIC) + 1)
        if len(head) != len(MAGIC) + 1 or not head.startswith(MAGIC):
            raise BrokenBlob(f"stored {label} is not a sealed blob")
        kid_bytes = handle.read(head[-1])
        size = handle.read(_SIZE.size)
        header = head + kid_bytes + size
        try:
            cipher = self._cipher(kid_bytes.decode("ascii"))
        except (UnicodeDecodeError, UnknownKey):
            raise BrokenBlob(
                f"stored {label} names a key this key ring does not hold "
                f"({kid_bytes.decode('ascii', 'replace')!r}): is this the key ring it was "
                "sealed with?"
            ) from None
        index = 0
        while True:
            length = handle.read(_LENGTH.size)
            if len(length) != _LENGTH.size:
                raise BrokenBlob(f"stored {label} is cut short")
            body = handle.read(_NONCE + _LENGTH.unpack(length)[0])
            nonce, sealed = body[:_NONCE], body[_NONCE:]
            for final in (False, True):
                try:
                    data = cipher.decrypt(nonce, sealed, _aad(name, index, final, header))
                    break
                except (InvalidTag, ValueError):
                    continue
            else:
                raise BrokenBlob(
                    f"stored {label} failed its integrity check at frame {index}: it was "
                    "sealed with another key ring's key, or it is damaged (restore it from "
                    "a backup)"
                )
            index += 1
            if final:
                if handle.read(1):
                    raise BrokenBlob(f"stored {label} has bytes after its end")
                return
            yield data

    # -- whole files ------------------------------------------------------------------

    def seal_file(self, path: Path, name: str) -> None:
        """Replace the plaintext file at `path` by its sealed form (atomically)."""
        size = path.stat().st_size
        writer = self.writer(name, size)
        temporary = path.with_name(path.name + ".sealing")
        with path.open("rb") as source, temporary.open("wb") as target:
            target.write(writer.header)
            while chunk := source.read(FILE_CHUNK):
                target.write(writer.frame(chunk))
            target.write(writer.end())
            target.flush()
            os.fsync(target.fileno())
        os.replace(temporary, path)

    def read_file(self, path: Path, name: str) -> bytes:
        """The whole plaintext of the sealed file at `path`."""
        with path.open("rb") as handle:
            return b"".join(self.frames(handle, name))

    def size_of(self, path: Path) -> int:
        """The plaintext size of the sealed file at `path`, from its header."""
        with path.open("rb") as handle:
            return self.plaintext_size(handle)
