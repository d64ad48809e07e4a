"""Fetch a version's artifact from the registry, verify it, unpack it.

The digest the registry recorded for the version is the one that counts: the
bytes received are hashed as they arrive and a mismatch refuses the artifact
(nothing is unpacked). Verified artifacts are unpacked once per digest under
`root/<digest>/`, so versions with identical bytes, and reloads, reuse them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import uuid
from pathlib import Path

from grpc import aio

from lattice.artifacts import unpack_to
from lattice.errors import FailedPrecondition
from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.runtime.identity import Caller, service_caller

log = logging.getLogger(__name__)

REGISTRY_URI_PREFIX = "lattice-artifact://sha256/"


class DigestMismatch(FailedPrecondition):
    """The downloaded bytes do not hash to the version's recorded digest."""


def needs_download(version: registry_pb2.ModelVersion) -> bool:
    """False for versions whose artifact lives outside the registry (e.g. a
    `triton://` URI naming a model Triton already serves)."""
    uri = version.artifact_uri
    return uri.startswith(REGISTRY_URI_PREFIX) or (not uri and bool(version.artifact_digest))


class ArtifactFetcher:
    """Downloads through the registry's DownloadArtifact stream."""

    def __init__(
        self,
        channel: aio.Channel,
        root: Path,
        *,
        timeout: float = 300.0,
        caller: Caller | None = None,
    ) -> None:
        self._stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        # Any online version of any tenant may need loading: fetch as the service.
        self._metadata = (caller or service_caller("inference")).metadata()
        self._root = root
        self._timeout = timeout

    async def fetch(self, version: registry_pb2.ModelVersion) -> Path | None:
        """The unpacked artifact directory, or None if there is nothing to fetch."""
        if not needs_download(version):
            return None
        expected = version.artifact_digest.lower()
        target = self._root / expected
        if (target / ".verified").exists():
            return target
        data = await self._download(version, expected)
        return await asyncio.to_thread(self._unpack, data, target)

    async def _download(self, version: registry_pb2.ModelVersion, expected: str) -> bytes:
        hasher = hashlib.sha256()
        data = bytearray()
        request = registry_pb2.DownloadArtifactRequest(digest=expected)
        async for message in self._stub.DownloadArtifact(
            request, timeout=self._timeout, metadata=self._metadata
        ):
            if message.WhichOneof("payload") == "chunk":
                hasher.update(message.chunk)
                data += message.chunk
        actual = hasher.hexdigest()
        if actual != expected:
            raise DigestMismatch(
                f"artifact of {version.model_name}:{version.version} failed verification: "
                f"sha256 is {actual}, the registry recorded {expected}; refusing to load it"
            )
        log.info(
            "downloaded %s:%d (%d bytes, sha256 verified)",
            version.model_name,
            version.version,
            len(data),
        )
        return bytes(data)

    def _unpack(self, data: bytes, target: Path) -> Path:
        staging = self._root / f".staging-{uuid.uuid4().hex}"
        try:
            unpack_to(data, staging)
            (staging / ".verified").touch()
            if target.exists():  # a concurrent fetch of the same digest won
                return target
            staging.rename(target)
            return target
        finally:
            shutil.rmtree(staging, ignore_errors=True)
