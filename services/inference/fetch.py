"""Fetch a version's artifact from the registry, verify it, unpack it.

The digest the registry recorded for the version is the one that counts: the
registry's Ed25519 signature over that digest is checked first, then the
bytes received are hashed as they arrive and a mismatch refuses the artifact
(nothing is unpacked). Verified artifacts are unpacked once per digest under
`root/<digest>/` with a manifest: the digest, the registry's signature, and
the sha256 of every unpacked file, authenticated with an HMAC from the key
ring. Every later load of that copy re-checks all of it (signature, manifest
MAC, each file's hash, no file added or missing); a copy that fails is
removed and fetched again from the registry, never loaded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import shutil
import uuid
from pathlib import Path

from grpc import aio

from lattice.artifacts import unpack_to
from lattice.errors import FailedPrecondition
from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.runtime.identity import Caller, service_caller
from services.runtime.keys import PURPOSE_ARTIFACT_MANIFEST, KeyManager, UnknownKey
from services.runtime.signatures import ArtifactSignatures, BadSignature

log = logging.getLogger(__name__)

REGISTRY_URI_PREFIX = "lattice-artifact://sha256/"
#: Written last into an unpacked copy; its presence means "verified once".
MANIFEST = ".lattice-manifest.json"
_FILE_CHUNK = 1024 * 1024


class DigestMismatch(FailedPrecondition):
    """The downloaded bytes do not hash to the version's recorded digest."""


class TamperedCopy(ValueError):
    """A local unpacked copy that no longer matches what was verified."""


def needs_download(version: registry_pb2.ModelVersion) -> bool:
    """False for versions whose artifact lives outside the registry (e.g. a
    `triton://` URI naming a model Triton already serves)."""
    uri = version.artifact_uri
    return uri.startswith(REGISTRY_URI_PREFIX) or (not uri and bool(version.artifact_digest))


def _file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under `directory` (but the manifest), by relative path;
    anything but a regular file or directory is recorded as such, never followed."""
    hashes: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        name = path.relative_to(directory).as_posix()
        if name == MANIFEST or (path.is_dir() and not path.is_symlink()):
            continue
        if path.is_symlink() or not path.is_file():
            hashes[name] = "not-a-regular-file"
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_FILE_CHUNK):
                digest.update(chunk)
        hashes[name] = digest.hexdigest()
    return hashes


def _canonical(record: dict[str, object]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


class ArtifactFetcher:
    """Downloads through the registry's DownloadArtifact stream."""

    def __init__(
        self,
        channel: aio.Channel,
        root: Path,
        *,
        keys: KeyManager,
        signatures: ArtifactSignatures,
        timeout: float = 300.0,
        on_refused_copy=lambda: None,
        caller: Caller | None = None,
    ) -> None:
        self._stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        # Any online version of any tenant may need loading: fetch as the service.
        self._metadata = (caller or service_caller("inference")).metadata()
        self._root = root
        self._keys = keys
        self._signatures = signatures
        self._timeout = timeout
        self._on_refused_copy = on_refused_copy

    async def fetch(self, version: registry_pb2.ModelVersion) -> Path | None:
        """The unpacked artifact directory, or None if there is nothing to fetch."""
        if not needs_download(version):
            return None
        expected = version.artifact_digest.lower()
        target = self._root / expected
        if (target / MANIFEST).exists():
            try:
                await asyncio.to_thread(self._check_copy, target, expected)
                return target
            except TamperedCopy as exc:
                log.warning(
                    "local copy of %s:%d failed verification (%s); fetching it again",
                    version.model_name,
                    version.version,
                    exc,
                )
                self._on_refused_copy()
                await asyncio.to_thread(shutil.rmtree, target, True)
        elif target.exists():  # unpacked before manifests existed, or cut short
            await asyncio.to_thread(shutil.rmtree, target, True)
        data, kid, signature = await self._download(version, expected)
        return await asyncio.to_thread(self._unpack, data, target, expected, kid, signature)

    async def _download(
        self, version: registry_pb2.ModelVersion, expected: str
    ) -> tuple[bytes, str, bytes]:
        hasher = hashlib.sha256()
        data = bytearray()
        kid, signature = "", b""
        request = registry_pb2.DownloadArtifactRequest(digest=expected)
        async for message in self._stub.DownloadArtifact(
            request, timeout=self._timeout, metadata=self._metadata
        ):
            kind = message.WhichOneof("payload")
            if kind == "info":
                kid, signature = message.info.signature_key_id, message.info.signature
                # Checked before any byte is accepted: an unsigned artifact is not read.
                self._signatures.verify(expected, kid, signature)
            elif kind == "chunk":
                if not signature:
                    raise BadSignature(f"artifact sha256:{expected} arrived without a signature")
                hasher.update(message.chunk)
                data += message.chunk
        if not signature:
            raise BadSignature(f"artifact sha256:{expected} arrived without a signature")
        actual = hasher.hexdigest()
        if actual != expected:
            raise DigestMismatch(
                f"artifact of {version.model_name}:{version.version} failed verification: "
                f"sha256 is {actual}, the registry recorded {expected}; refusing to load it"
            )
        log.info(
            "downloaded %s:%d (%d bytes, signature and sha256 verified)",
            version.model_name,
            version.version,
            len(data),
        )
        return bytes(data), kid, signature

    def _unpack(self, data: bytes, target: Path, digest: str, kid: str, signature: bytes) -> Path:
        staging = self._root / f".staging-{uuid.uuid4().hex}"
        try:
            unpack_to(data, staging)
            record: dict[str, object] = {
                "digest": digest,
                "kid": kid,
                "signature": base64.b64encode(signature).decode(),
                "files": _file_hashes(staging),
            }
            mac_key = self._keys.current(PURPOSE_ARTIFACT_MANIFEST)
            record["mac_kid"] = mac_key.kid
            record["mac"] = hmac.new(mac_key.material, _canonical(record), "sha256").hexdigest()
            (staging / MANIFEST).write_text(json.dumps(record))
            if target.exists():  # a concurrent fetch of the same digest won
                return target
            staging.rename(target)
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _check_copy(self, target: Path, expected: str) -> None:
        """Raise TamperedCopy unless the copy at `target` is exactly what was verified."""
        try:
            record = json.loads((target / MANIFEST).read_text())
            mac = record.pop("mac")
            key = self._keys.find(PURPOSE_ARTIFACT_MANIFEST, record["mac_kid"])
            signature = base64.b64decode(record["signature"], validate=True)
        except (OSError, ValueError, KeyError, TypeError, UnknownKey) as exc:
            raise TamperedCopy(f"unreadable manifest ({type(exc).__name__})") from None
        good = hmac.new(key.material, _canonical(record), "sha256").hexdigest()
        if not isinstance(mac, str) or not hmac.compare_digest(mac, good):
            raise TamperedCopy("manifest is not authentic")
        if record["digest"] != expected:
            raise TamperedCopy("manifest names another artifact")
        try:
            self._signatures.verify(expected, record["kid"], signature)
        except BadSignature as exc:
            raise TamperedCopy(exc.message) from None
        files = _file_hashes(target)
        if files != record["files"]:
            changed = sorted(set(files.items()) ^ set(record["files"].items()))
            raise TamperedCopy(f"{len(changed)} file entries differ, e.g. {changed[0][0]!r}")
