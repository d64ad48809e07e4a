"""Artifact upload and download flows: validate, stream through the store, record.

Kept apart from `Registry` because artifacts carry no revision: they are
immutable blobs that versions point at, not registry state that Watch
subscribers follow.

Bytes are shared (content-addressed), access is not: a tenant may download
an artifact it uploaded or one a version it may see points at (`may_use`,
from the registry); for anyone else it is NOT_FOUND, like a missing one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from lattice.errors import InvalidArgument, NotFound
from lattice.v1 import registry_pb2
from services.registry import validation as check
from services.registry.artifacts import ArtifactStore, artifact_uri, digest_from_reference
from services.registry.metrics import RegistryMetrics
from services.registry.store import Database, SqliteStore
from services.runtime.identity import Caller
from services.runtime.signatures import ArtifactSignatures

MAX_CONTENT_TYPE = 256
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclasses.dataclass(frozen=True)
class Download:
    info: registry_pb2.ArtifactInfo
    chunks: AsyncIterator[bytes]


class Artifacts:
    """UploadArtifact and DownloadArtifact over the content-addressed store."""

    def __init__(
        self,
        store: ArtifactStore,
        db: Database,
        metrics: RegistryMetrics,
        signatures: ArtifactSignatures,
        may_use: Callable[[Caller, str], Awaitable[bool]],
        *,
        max_artifact_bytes: int = 64 * 1024**3,
    ) -> None:
        self._signatures = signatures
        self._may_use = may_use
        self._store = store
        self._db = db
        self._metrics = metrics
        self._max_artifact_bytes = max_artifact_bytes

    async def upload(
        self, caller: Caller, header: registry_pb2.ArtifactHeader, chunks: AsyncIterator[bytes]
    ) -> registry_pb2.UploadArtifactResponse:
        digest = check.digest(header.digest, "header.digest")
        if header.size_bytes < 0:
            raise InvalidArgument("header.size_bytes", "must be >= 0")
        if header.size_bytes > self._max_artifact_bytes:
            raise InvalidArgument(
                "header.size_bytes", f"larger than the limit of {self._max_artifact_bytes} bytes"
            )
        check.text(header.content_type, "header.content_type", MAX_CONTENT_TYPE)

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                self._metrics.artifact_received_bytes.inc(len(chunk))
                yield chunk

        stored = await self._store.write(digest, header.size_bytes, counted())
        is_new_row = await self._db.call(
            "record_artifact",
            SqliteStore.record_artifact,
            digest,
            header.size_bytes,
            header.content_type or DEFAULT_CONTENT_TYPE,
            caller.tenant,
        )
        if is_new_row:
            self._metrics.artifact_bytes.inc(header.size_bytes)
        await asyncio.to_thread(self._signature, digest)
        return registry_pb2.UploadArtifactResponse(
            artifact_uri=artifact_uri(digest),
            digest=digest,
            size_bytes=header.size_bytes,
            created=stored.created,
        )

    async def download(self, caller: Caller, reference: str) -> Download:
        if not reference:
            raise InvalidArgument("digest", "required: a sha256 digest or artifact URI")
        digest = digest_from_reference(reference, "digest")
        if not self._store.exists(digest) or not await self._may_use(caller, digest):
            raise NotFound(f"artifact sha256:{digest} is not stored")
        row = await self._db.call("get_artifact", SqliteStore.artifact, digest)
        kid, signature = await asyncio.to_thread(self._signature, digest)
        info = registry_pb2.ArtifactInfo(
            digest=digest,
            size_bytes=self._store.size(digest),
            content_type=row.content_type if row else DEFAULT_CONTENT_TYPE,
            signature=signature,
            signature_key_id=kid,
        )

        async def counted() -> AsyncIterator[bytes]:
            async for chunk in self._store.read(digest):
                self._metrics.artifact_sent_bytes.inc(len(chunk))
                yield chunk

        return Download(info, counted())

    def _signature(self, digest: str) -> tuple[str, bytes]:
        """The stored signature of a blob, made now if it has none (stored before
        signing existed, or its signature file was lost)."""
        stored = self._store.read_signature(digest)
        if stored is None:
            stored = self._signatures.sign(digest)
            self._store.write_signature(digest, *stored)
        return stored
