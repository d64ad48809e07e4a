"""Sealed cache entries: AES-GCM from the key ring, bound to their Redis key.

An entry in Redis is `SEAL_MAGIC | len(kid) | kid | nonce | ciphertext+tag`.
The key id says which key-ring version sealed it, so after `lattice keys
rotate` old entries still open while new ones are sealed under the new
version. The Redis key is the associated data: an entry copied to another
key (another tenant's, another request's) fails authentication exactly as
forged or corrupted bytes do. Whoever can read Redis sees neither prompts
nor answers; whoever can write it cannot make the service say anything.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.keys import PURPOSE_CACHE_SEAL, KeyManager, UnknownKey

SEAL_MAGIC = b"LS1"
NONCE_BYTES = 12


class BrokenSeal(ValueError):
    """Stored bytes that this ring did not seal for this key (forged, corrupt, foreign)."""


class CacheSealer:
    """Seals and opens cache entries with the ring's cache key (one AESGCM per kid)."""

    def __init__(self, keys: KeyManager) -> None:
        self._keys = keys
        self._ciphers: dict[str, AESGCM] = {}

    def _cipher(self, kid: str, material: bytes) -> AESGCM:
        cipher = self._ciphers.get(kid)
        if cipher is None:
            cipher = self._ciphers[kid] = AESGCM(material)
        return cipher

    def seal(self, key: str, plaintext: bytes) -> bytes:
        """`plaintext` sealed under the newest key, bound to the Redis `key`."""
        current = self._keys.current(PURPOSE_CACHE_SEAL)
        kid = current.kid.encode()
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._cipher(current.kid, current.material).encrypt(nonce, plaintext, key.encode())
        return b"".join((SEAL_MAGIC, bytes((len(kid),)), kid, nonce, sealed))

    def open(self, key: str, entry: bytes) -> bytes:
        """The plaintext of an entry stored under `key`; BrokenSeal if it is not genuine."""
        head = len(SEAL_MAGIC)
        if len(entry) < head + 1 or not entry.startswith(SEAL_MAGIC):
            raise BrokenSeal("not a sealed entry")
        kid_end = head + 1 + entry[head]
        body = kid_end + NONCE_BYTES
        try:
            kid = entry[head + 1 : kid_end].decode("ascii")
            found = self._keys.find(PURPOSE_CACHE_SEAL, kid)
            return self._cipher(found.kid, found.material).decrypt(
                entry[kid_end:body], entry[body:], key.encode()
            )
        except (UnicodeDecodeError, UnknownKey, InvalidTag, ValueError) as exc:
            raise BrokenSeal(f"entry failed authentication ({type(exc).__name__})") from None
