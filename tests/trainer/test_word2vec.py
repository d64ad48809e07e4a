"""WORD2VEC jobs: gensim training inside a real trainer job (torchrun process),
a real registry, the artifact loaded back with gensim."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from gensim.models import KeyedVectors

from lattice.v1 import common_pb2, trainer_pb2
from tests.support import peoples_daily
from tests.support.word_corpus import (
    PAIRS,
    planted_sentences,
    write_analogies,
    write_jsonl,
    write_pairs,
)

from .conftest import wait_for_job
from .test_training import collect, download, versions

pytestmark = pytest.mark.slow


def corpus_spec(path, name: str = "planted") -> trainer_pb2.DatasetSpec:
    return trainer_pb2.DatasetSpec(
        name=name,
        sources=[trainer_pb2.DataSource(path=str(path))],
        cleaning=trainer_pb2.CleaningOptions(normalize_whitespace=True),
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=300
        ),
        validation_fraction=0.05,
        seed=1,
    )


def word2vec_job(dataset_id: str, model_name: str, **options) -> trainer_pb2.JobSpec:
    return trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_WORD2VEC,
        dataset_id=dataset_id,
        hyperparameters=trainer_pb2.Hyperparameters(epochs=15, seed=1),
        word_embedding=trainer_pb2.WordEmbeddingOptions(
            **{"dimensions": 24, "window": 3, "min_count": 2, "workers": 2, **options}
        ),
        registration=trainer_pb2.RegistrationSpec(model_name=model_name),
    )


async def prepare(trainer, spec: trainer_pb2.DatasetSpec) -> trainer_pb2.Dataset:
    request = trainer_pb2.PrepareDatasetRequest(spec=spec)
    return (await trainer.PrepareDataset(request)).dataset


async def test_word2vec_job_finds_planted_pairs_and_loads_in_gensim(tmp_path, trainer, registry):
    corpus = write_jsonl(tmp_path / "planted.jsonl", planted_sentences())
    dataset = await prepare(trainer, corpus_spec(corpus))
    spec = word2vec_job(
        dataset.id,
        "planted-w2v",
        similarity_pairs_path=str(write_pairs(tmp_path / "pairs.tsv")),
        analogies_path=str(write_analogies(tmp_path / "analogies.txt")),
        neighbour_samples=["king", "dog"],
    )
    submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    watcher = asyncio.create_task(collect(trainer, submitted.id))
    job = await wait_for_job(trainer, submitted.id)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    events = await asyncio.wait_for(watcher, 30)

    metrics = [e.metrics for e in events if e.HasField("metrics")]
    assert [m.step for m in metrics] == list(range(1, 16))
    assert all(m.total_steps == 15 and m.tokens_per_second > 0 for m in metrics)
    assert metrics[-1].loss < metrics[0].loss

    (version,) = await versions(registry, "planted-w2v")
    assert version.format == common_pb2.ARTIFACT_FORMAT_WORD_VECTORS
    assert version.metrics["similarity_spearman"] > 0.5
    assert 0.0 <= version.metrics["analogy_accuracy"] <= 1.0  # reported (no planted analogy)
    neighbours = json.loads(version.params["eval.neighbours"])
    assert neighbours["king"][0][0] == "queen"
    assert version.params["family"] == "MODEL_FAMILY_WORD2VEC"

    await download(registry, version, tmp_path / "artifact")
    manifest = json.loads((tmp_path / "artifact" / "manifest.json").read_text())
    assert manifest["family"] == "WORD2VEC" and manifest["dimensions"] == 24
    vectors = KeyedVectors.load_word2vec_format(str(tmp_path / "artifact" / manifest["file"]))
    for first, second in PAIRS:
        assert vectors.most_similar(first, topn=1)[0][0] == second


async def test_word2vec_binary_format_and_cbow(tmp_path, trainer, registry):
    corpus = write_jsonl(tmp_path / "planted.jsonl", planted_sentences(1500))
    dataset = await prepare(trainer, corpus_spec(corpus))
    spec = word2vec_job(
        dataset.id, "planted-cbow", binary=True, algorithm=trainer_pb2.WORD_VECTOR_ALGORITHM_CBOW
    )
    spec.hyperparameters.epochs = 20
    submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, submitted.id)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    (version,) = await versions(registry, "planted-cbow")
    await download(registry, version, tmp_path / "artifact")
    vectors = KeyedVectors.load_word2vec_format(
        str(tmp_path / "artifact" / "vectors.bin"), binary=True
    )
    assert vectors.vector_size == 24
    assert "queen" in [w for w, _ in vectors.most_similar("king", topn=3)]


@pytest.mark.parametrize(
    ("options", "code", "field"),
    [
        ({"dimensions": 5000}, "INVALID_ARGUMENT", "spec.word_embedding.dimensions"),
        ({"similarity_pairs_path": "missing.tsv"}, "INVALID_ARGUMENT", "similarity_pairs_path"),
        # Evaluation lists are confined like dataset sources: no reading the host.
        ({"analogies_path": "/etc/passwd"}, "PERMISSION_DENIED", "analogies_path"),
        ({"similarity_pairs_path": "../x.tsv"}, "PERMISSION_DENIED", "similarity_pairs_path"),
    ],
)
async def test_bad_word2vec_specs_are_refused(tmp_path, trainer, options, code, field):
    corpus = write_jsonl(tmp_path / "planted.jsonl", planted_sentences(400))
    dataset = await prepare(trainer, corpus_spec(corpus))
    spec = word2vec_job(dataset.id, "bad-w2v", **options)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert field in caught.value.details()


async def test_min_count_above_every_word_fails_the_job_clearly(tmp_path, trainer):
    corpus = write_jsonl(tmp_path / "planted.jsonl", planted_sentences(400))
    dataset = await prepare(trainer, corpus_spec(corpus))
    spec = word2vec_job(dataset.id, "empty-w2v")
    spec.word_embedding.min_count = 100000
    submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, submitted.id)
    assert job.state == trainer_pb2.JOB_STATE_FAILED
    assert "min_count=100000" in job.error


#: Countries, as the corpus itself groups them (they fill the same slots in
#: news sentences); not planted: this is the gold-segmented People's Daily text.
COUNTRIES = {"英国", "俄罗斯", "日本", "德国", "法国", "加拿大", "意大利", "韩国", "印度"}


async def test_chinese_word2vec_on_peoples_daily_puts_countries_together(
    tmp_path, trainer, registry
):
    corpus = peoples_daily.write_jsonl(tmp_path / "rmrb.jsonl", limit=8000)
    dataset = await prepare(trainer, corpus_spec(corpus, name="rmrb"))
    spec = word2vec_job(
        dataset.id,
        "rmrb-w2v",
        segmentation=trainer_pb2.WORD_SEGMENTATION_WHITESPACE,
        neighbour_samples=["美国"],
    )
    spec.word_embedding.dimensions = 64
    spec.word_embedding.window = 5
    spec.word_embedding.min_count = 5
    spec.hyperparameters.epochs = 5
    submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, submitted.id, timeout=300)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    (version,) = await versions(registry, "rmrb-w2v")
    neighbours = [word for word, _ in json.loads(version.params["eval.neighbours"])["美国"]]
    assert len(COUNTRIES & set(neighbours)) >= 2, neighbours
