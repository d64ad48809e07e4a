"""Artifact signatures: Ed25519 over an artifact's digest, keys from the key ring.

The registry signs every artifact it stores (at upload, or on first download
for one stored before signing existed); inference verifies the signature and
the digest before it loads anything. The signing key for each key-ring
version is derived from that version's secret (purpose
`PURPOSE_ARTIFACT_SIGNATURE`), so `lattice keys rotate` starts a new signing
key while signatures made under older versions still verify (the key id
travels with the signature, as cosign's bundle names its key).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lattice.errors import FailedPrecondition
from services.runtime.keys import PURPOSE_ARTIFACT_SIGNATURE, KeyManager, UnknownKey

_CONTEXT = b"lattice-artifact-v1\0"


class BadSignature(FailedPrecondition):
    """An artifact whose signature is missing, unknown or does not match its digest."""


def _message(digest: str) -> bytes:
    return _CONTEXT + digest.lower().encode()


class ArtifactSignatures:
    """Signs and verifies artifact digests with the ring's artifact keys."""

    def __init__(self, keys: KeyManager) -> None:
        self._keys = keys
        self._private: dict[str, Ed25519PrivateKey] = {}
        self._public: dict[str, Ed25519PublicKey] = {}

    def _signing_key(self, kid: str, material: bytes) -> Ed25519PrivateKey:
        key = self._private.get(kid)
        if key is None:
            key = self._private[kid] = Ed25519PrivateKey.from_private_bytes(material)
        return key

    def sign(self, digest: str) -> tuple[str, bytes]:
        """(key id, signature) for `digest`, under the ring's newest version."""
        current = self._keys.current(PURPOSE_ARTIFACT_SIGNATURE)
        return current.kid, self._signing_key(current.kid, current.material).sign(_message(digest))

    def verify(self, digest: str, kid: str, signature: bytes) -> None:
        """Raise BadSignature unless `signature` by key `kid` covers `digest`."""
        if not kid or not signature:
            raise BadSignature(f"artifact sha256:{digest} carries no registry signature")
        public = self._public.get(kid)
        if public is None:
            try:
                found = self._keys.find(PURPOSE_ARTIFACT_SIGNATURE, kid)
            except UnknownKey:
                raise BadSignature(
                    f"artifact sha256:{digest} is signed with unknown key {kid!r}"
                ) from None
            public = self._public[kid] = self._signing_key(kid, found.material).public_key()
        try:
            public.verify(signature, _message(digest))
        except InvalidSignature:
            raise BadSignature(
                f"artifact sha256:{digest}: the registry's signature does not match"
            ) from None
