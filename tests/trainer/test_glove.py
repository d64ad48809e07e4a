"""GloVe: the co-occurrence counts and the weighted least-squares fit (no gRPC),
then a GLOVE job through the real trainer and registry."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from gensim.models import KeyedVectors

from lattice.v1 import trainer_pb2
from services.trainer.worker.glove import GloVe, build_vocabulary, cooccurrence
from tests.support.word_corpus import PAIRS, planted_sentences, write_jsonl

from .conftest import wait_for_job
from .test_training import collect, download, versions
from .test_word2vec import corpus_spec, prepare


def _dense(data) -> dict[tuple[str, str], float]:
    return {
        (data.words[i], data.words[j]): float(x)
        for i, j, x in zip(data.rows, data.cols, data.counts, strict=True)
    }


def test_cooccurrence_weights_by_inverse_distance_symmetrically_within_sentences():
    sentences = [["a", "b", "c", "rare"], ["c", "a"]]
    words = build_vocabulary(sentences, min_count=2)
    assert words == ["a", "c"]  # "b" and "rare" occur once: dropped before windows
    counts = _dense(cooccurrence(sentences, words, window=2))
    # sentence 1 without OOV words is "a c" (distance 1, as in glove.c); sentence 2 "c a".
    assert counts == {("a", "c"): 2.0, ("c", "a"): 2.0}
    full = _dense(cooccurrence([["x", "y", "z"]], ["x", "y", "z"], window=2))
    assert full == {
        ("x", "y"): 1.0,
        ("y", "x"): 1.0,
        ("y", "z"): 1.0,
        ("z", "y"): 1.0,
        ("x", "z"): 0.5,
        ("z", "x"): 0.5,
    }


def test_fit_reproduces_log_cooccurrence_where_weights_saturate():
    """GloVe's defining property: w_i . w~_j + b_i + b~_j -> log X_ij. With x_max below
    every count all weights are 1, so the fit is plain least squares on log X."""
    sentences = [s.split() for s in planted_sentences(600)]
    words = build_vocabulary(sentences, 1)
    data = cooccurrence(sentences, words, 3)
    model = GloVe(len(words), 32, seed=1)
    losses = model.fit(data, epochs=150, learning_rate=0.1, x_max=0.1, batch_size=512)
    assert losses[-1] < 0.02 * losses[0]
    with torch.no_grad():
        i, j = torch.from_numpy(data.rows), torch.from_numpy(data.cols)
        fitted = (model.w[i] * model.w_context[j]).sum(1) + model.b[i] + model.b_context[j]
    residual = fitted.numpy() - np.log(data.counts)
    assert np.abs(residual).mean() < 0.1


def test_fit_finds_the_planted_pairs():
    sentences = [s.split() for s in planted_sentences(2000)]
    words = build_vocabulary(sentences, 1)
    model = GloVe(len(words), 16, seed=1)
    losses = model.fit(cooccurrence(sentences, words, 3), epochs=60, batch_size=512)
    assert all(b < a for a, b in itertools.pairwise(losses[:11]))
    vectors = model.keyed_vectors(words)
    for first, second in PAIRS:
        assert vectors.most_similar(first, topn=1)[0][0] == second


@pytest.mark.slow
async def test_glove_job_registers_vectors_gensim_loads(tmp_path, trainer, registry):
    corpus = write_jsonl(tmp_path / "planted.jsonl", planted_sentences(2000))
    dataset = await prepare(trainer, corpus_spec(corpus))
    spec = trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_GLOVE,
        dataset_id=dataset.id,
        hyperparameters=trainer_pb2.Hyperparameters(epochs=60, seed=1),
        word_embedding=trainer_pb2.WordEmbeddingOptions(
            dimensions=16, window=3, min_count=2, glove_batch_size=512, neighbour_samples=["king"]
        ),
        registration=trainer_pb2.RegistrationSpec(model_name="planted-glove"),
    )
    submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))).job
    job = await wait_for_job(trainer, submitted.id, timeout=180)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    metrics = [e.metrics for e in await collect(trainer, job.id) if e.HasField("metrics")]
    assert len(metrics) == 60 and metrics[-1].loss < metrics[0].loss
    (version,) = await versions(registry, "planted-glove")
    assert json.loads(version.params["eval.neighbours"])["king"][0][0] == "queen"
    await download(registry, version, tmp_path / "artifact")
    vectors = KeyedVectors.load_word2vec_format(str(tmp_path / "artifact" / "vectors.txt"))
    for first, second in PAIRS:
        assert vectors.most_similar(first, topn=1)[0][0] == second
