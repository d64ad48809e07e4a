"""Artifacts encrypted at rest: AES-GCM frames under a key from the key ring.

Optional (`encrypt_artifacts_at_rest`, off by default). A sealed blob is
`<digest>.sealed` beside where the plain one would be:

    MAGIC | len(kid) | kid | plaintext size (8 bytes) | frame ... | end frame
    frame = len(ciphertext) (4 bytes) | nonce (12) | ciphertext+tag

Each frame is one received chunk. Its associated data names the blob's
digest, the frame's index and whether it is the last, so frames cannot be
reordered, dropped, swapped between blobs, or the file cut short without the
read failing. The header is authenticated too (it is the end frame's
associated data). The key id in the header keeps old blobs readable after
`lattice keys rotate`; new blobs use the newest key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lattice.errors import FailedPrecondition
from services.runtime.keys import PURPOSE_ARTIFACT_AT_REST, KeyManager, UnknownKey

MAGIC = b"LAR1"
SUFFIX = ".sealed"
_NONCE = 12
_LENGTH = struct.Struct(">I")
_SIZE = struct.Struct(">Q")


class BrokenBlob(FailedPrecondition):
    """A sealed blob on disk that fails authentication (corrupted or tampered)."""


def _aad(digest: str, index: int, final: bool, header: bytes) -> bytes:
    tail = b"end:" + header if final else b"chunk"
    return f"{digest}:{index}:".encode() + tail


class FrameWriter:
    """Seals one blob's chunks in order; `header` first, then `frame()`s, then `end()`."""

    def __init__(self, cipher: AESGCM, kid: str, digest: str, size: int) -> None:
        self._cipher = cipher
        self._digest = digest
        self._index = 0
        encoded = kid.encode()
        self.header = MAGIC + bytes((len(encoded),)) + encoded + _SIZE.pack(size)

    def _frame(self, data: bytes, final: bool) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._cipher.encrypt(
            nonce, data, _aad(self._digest, self._index, final, self.header)
        )
        self._index += 1
        return _LENGTH.pack(len(sealed)) + nonce + sealed

    def frame(self, chunk: bytes) -> bytes:
        return self._frame(chunk, final=False)

    def end(self) -> bytes:
        return self._frame(b"", final=True)


class AtRest:
    """Seals blobs as they are written and opens them as they are read."""

    def __init__(self, keys: KeyManager) -> None:
        self._keys = keys
        self._ciphers: dict[str, AESGCM] = {}

    def _cipher(self, kid: str) -> AESGCM:
        cipher = self._ciphers.get(kid)
        if cipher is None:
            key = self._keys.find(PURPOSE_ARTIFACT_AT_REST, kid)
            cipher = self._ciphers[kid] = AESGCM(key.material)
        return cipher

    def writer(self, digest: str, size: int) -> FrameWriter:
        kid = self._keys.current(PURPOSE_ARTIFACT_AT_REST).kid
        return FrameWriter(self._cipher(kid), kid, digest, size)

    @staticmethod
    def plaintext_size(handle: BinaryIO) -> int:
        """The blob's plaintext size, from its header."""
        head = handle.read(len(MAGIC) + 1)
        if len(head) != len(MAGIC) + 1 or not head.startswith(MAGIC):
            raise BrokenBlob("stored artifact is not a sealed blob")
        handle.read(head[-1])
        size = handle.read(_SIZE.size)
        if len(size) != _SIZE.size:
            raise BrokenBlob("stored artifact header is cut short")
        return _SIZE.unpack(size)[0]

    def frames(self, handle: BinaryIO, digest: str) -> Iterator[bytes]:
        """The plaintext chunks of the sealed blob in `handle` (blocking reads)."""
        head = handle.read(len(MAGIC) + 1)
        if len(head) != len(MAGIC) + 1 or not head.startswith(MAGIC):
            raise BrokenBlob(f"stored artifact sha256:{digest} is not a sealed blob")
        kid_bytes = handle.read(head[-1])
        size = handle.read(_SIZE.size)
        header = head + kid_bytes + size
        try:
            cipher = self._cipher(kid_bytes.decode("ascii"))
        except (UnicodeDecodeError, UnknownKey):
            raise BrokenBlob(f"stored artifact sha256:{digest} names an unknown key") from None
        index = 0
        while True:
            length = handle.read(_LENGTH.size)
            if len(length) != _LENGTH.size:
                raise BrokenBlob(f"stored artifact sha256:{digest} is cut short")
            body = handle.read(_NONCE + _LENGTH.unpack(length)[0])
            nonce, sealed = body[:_NONCE], body[_NONCE:]
            for final in (False, True):
                try:
                    data = cipher.decrypt(nonce, sealed, _aad(digest, index, final, header))
                    break
                except (InvalidTag, ValueError):
                    continue
            else:
                raise BrokenBlob(
                    f"stored artifact sha256:{digest} failed its integrity check at frame "
                    f"{index}; restore it from a backup"
                )
            index += 1
            if final:
                if handle.read(1):
                    raise BrokenBlob(f"stored artifact sha256:{digest} has bytes after its end")
                return
            yield data
