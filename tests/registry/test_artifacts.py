"""The content-addressed store through gRPC: verify, refuse, dedupe, stream back."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from lattice.artifacts import sha256_hex
from lattice.errors import InvalidArgument, from_rpc_error
from lattice.v1 import common_pb2, registry_pb2
from services.runtime.signatures import ArtifactSignatures
from tests.registry.support import TRANSFORMERS, RegistryClient, upload_messages
from tests.support.identity import key_ring


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_wrong_digest_is_refused_and_leaves_nothing(
    registry_server, client: RegistryClient, tmp_path
):
    await client.model("m")
    data = os.urandom(300_000)
    wrong = sha256_hex(b"something else")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.UploadArtifact(upload_messages(data, digest=wrong))
    error = from_rpc_error(info.value)
    assert isinstance(error, InvalidArgument) and error.field == "header.digest"
    assert _files(tmp_path / "registry" / "artifacts") == []
    # ... and no version can point at it.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CreateVersion(
            registry_pb2.CreateVersionRequest(
                model_name="m",
                artifact_uri=f"lattice-artifact://sha256/{wrong}",
                artifact_digest=wrong,
                format=TRANSFORMERS,
            )
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await client.stub.ListVersions(registry_pb2.ListVersionsRequest(model_name="m"))
    assert list(listed.versions) == []


async def test_size_mismatch_and_missing_header_are_refused(client: RegistryClient, tmp_path):
    data = b"x" * 1000
    header = registry_pb2.ArtifactHeader(digest=sha256_hex(data), size_bytes=999)
    for messages, field in [
        (
            [
                registry_pb2.UploadArtifactRequest(header=header),
                registry_pb2.UploadArtifactRequest(chunk=data),
            ],
            "header.size_bytes",
        ),
        ([registry_pb2.UploadArtifactRequest(chunk=data)], "header"),
        ([], "header"),
        (
            [
                registry_pb2.UploadArtifactRequest(header=header),
                registry_pb2.UploadArtifactRequest(header=header),
            ],
            "header",
        ),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.UploadArtifact(iter(messages))
        error = from_rpc_error(info.value)
        assert isinstance(error, InvalidArgument) and error.field == field, messages
    assert _files(tmp_path / "registry" / "artifacts") == []


async def test_upload_is_idempotent_and_downloads_back(client: RegistryClient, tmp_path):
    data = os.urandom(2_500_000)  # several chunks each way
    first = await client.upload(data)
    second = await client.upload(data)
    assert first.created and not second.created
    assert first.artifact_uri == second.artifact_uri and second.size_bytes == len(data)
    stored = _files(tmp_path / "registry" / "artifacts")
    assert [p.suffix for p in stored] == ["", ".sig"]  # the blob once, and its signature
    assert stored[0].read_bytes() == data

    for reference in (first.digest, first.artifact_uri):
        stream = client.stub.DownloadArtifact(
            registry_pb2.DownloadArtifactRequest(digest=reference)
        )
        messages = [m async for m in stream]
        assert messages[0].info.digest == first.digest
        assert messages[0].info.size_bytes == len(data)
        assert messages[0].info.content_type == "application/x-tar"
        assert b"".join(m.chunk for m in messages[1:]) == data
        # Signed by the registry with the suite's key ring.
        info = messages[0].info
        ArtifactSignatures(key_ring(tmp_path)).verify(
            first.digest, info.signature_key_id, info.signature
        )


async def test_empty_artifact_and_unknown_download(client: RegistryClient):
    empty = await client.upload(b"")
    assert empty.size_bytes == 0 and empty.digest == sha256_hex(b"")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        stream = client.stub.DownloadArtifact(
            registry_pb2.DownloadArtifactRequest(digest=sha256_hex(b"never uploaded"))
        )
        async for _ in stream:
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_version_digest_must_match_uri(client: RegistryClient):
    await client.model("m")
    uploaded = await client.upload(b"abc")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.CreateVersion(
            registry_pb2.CreateVersionRequest(
                model_name="m",
                artifact_uri=uploaded.artifact_uri,
                artifact_digest=sha256_hex(b"abd"),
                format=TRANSFORMERS,
            )
        )
    assert from_rpc_error(info.value).field == "artifact_digest"


async def test_triton_served_version_needs_no_digest(client: RegistryClient):
    await client.model("m")
    response = await client.stub.CreateVersion(
        registry_pb2.CreateVersionRequest(
            model_name="m",
            artifact_uri="triton://127.0.0.1:8001/gpt",
            format=common_pb2.ARTIFACT_FORMAT_TRITON,
        )
    )
    assert response.version.version == 1 and response.version.artifact_digest == ""
