"""Serving word-embedding versions: Embed (mean of word vectors, OOV words
reported) and SimilarWords, on a real inference server with a real registry and
a gensim model trained here on a corpus whose neighbours are known."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from gensim.models import Word2Vec

from lattice.v1 import common_pb2, inference_pb2
from services.inference.serving import VersionState
from services.runtime.word_vector_files import write_vectors
from services.suite.embedded import EMBEDDING
from tests.support.word_corpus import PAIRS, planted_sentences

WORD_VECTORS = common_pb2.ARTIFACT_FORMAT_WORD_VECTORS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A gensim Word2Vec model and its artifact directory (text format)."""
    sentences = [s.split() for s in planted_sentences(2000)]
    model = Word2Vec(
        sentences, vector_size=16, window=3, min_count=1, sg=1, seed=1, workers=1, epochs=20
    )
    directory = tmp_path_factory.mktemp("w2v")
    write_vectors(model.wv, directory, "WORD2VEC", False, {})
    return model.wv, directory


async def deploy_words(lab, directory, name: str = "words") -> None:
    await lab.create_model(name, EMBEDDING)
    await lab.register(name, directory, WORD_VECTORS)
    await lab.deploy(name, {1: 100})
    await lab.wait_state(name, 1, VersionState.READY)


async def test_embed_is_the_mean_of_gensim_vectors_and_reports_unknown_words(lab, trained):
    vectors, directory = trained
    await deploy_words(lab, directory)
    response = await lab.stub.Embed(
        inference_pb2.EmbedRequest(
            model="words", inputs=["king rules", "queen zzz", "qqq www"], skip_cache=True
        )
    )
    first, second, third = response.embeddings
    # The text artifact keeps 6 significant digits, as word2vec's format does.
    expected = (vectors["king"] + vectors["rules"]) / 2
    np.testing.assert_allclose(first.values, expected, rtol=1e-4, atol=1e-5)
    assert list(first.unknown_words) == [] and not first.all_unknown
    np.testing.assert_allclose(second.values, vectors["queen"], rtol=1e-4, atol=1e-5)
    assert list(second.unknown_words) == ["zzz"] and not second.all_unknown
    assert third.all_unknown and list(third.unknown_words) == ["qqq", "www"]
    assert not any(third.values)
    assert response.usage.prompt_tokens == 6  # words


async def test_similar_words_by_word_and_by_vector(lab, trained):
    vectors, directory = trained
    await deploy_words(lab, directory)
    for first, second in PAIRS:
        response = await lab.stub.SimilarWords(
            inference_pb2.SimilarWordsRequest(model="words", word=first, top_k=3)
        )
        words = [w.word for w in response.words]
        assert words[0] == second and first not in words
        expected = vectors.most_similar(first, topn=3)
        assert words == [w for w, _ in expected]
        np.testing.assert_allclose(
            [w.similarity for w in response.words], [s for _, s in expected], atol=1e-4
        )
    by_vector = await lab.stub.SimilarWords(
        inference_pb2.SimilarWordsRequest(
            model="words:1", vector=inference_pb2.Embedding(values=vectors["dog"]), top_k=2
        )
    )
    assert [w.word for w in by_vector.words] == ["dog", "cat"]
    assert (by_vector.model_name, by_vector.model_version) == ("words", 1)


@pytest.mark.parametrize(
    ("request_fields", "code", "needle"),
    [
        ({"word": "emperor"}, grpc.StatusCode.INVALID_ARGUMENT, "not in the model's vocabulary"),
        (
            {"vector": inference_pb2.Embedding(values=[1.0, 2.0])},
            grpc.StatusCode.INVALID_ARGUMENT,
            "has 2 values",
        ),
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "set word or vector"),
        ({"word": "king", "top_k": 5000}, grpc.StatusCode.INVALID_ARGUMENT, "top_k"),
    ],
)
async def test_bad_similar_words_requests(lab, trained, request_fields, code, needle):
    _vectors, directory = trained
    await deploy_words(lab, directory)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lab.stub.SimilarWords(
            inference_pb2.SimilarWordsRequest(model="words", **request_fields)
        )
    assert caught.value.code() == code
    assert needle in caught.value.details()


async def test_similar_words_on_a_transformers_encoder_is_failed_precondition(
    lab, model_dirs, trained
):
    await lab.create_model("enc", EMBEDDING)
    await lab.register("enc", model_dirs["enc"])
    await lab.deploy("enc", {1: 100})
    await lab.wait_state("enc", 1, VersionState.READY)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await lab.stub.SimilarWords(inference_pb2.SimilarWordsRequest(model="enc", word="a"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not a word-embedding model" in caught.value.details()


async def test_cached_embed_keeps_unknown_words(cached_lab, trained):
    _vectors, directory = trained
    await deploy_words(cached_lab, directory)
    request = inference_pb2.EmbedRequest(model="words", inputs=["king zzz"])
    fresh = await cached_lab.stub.Embed(request)
    again = await cached_lab.stub.Embed(request)
    assert not fresh.cached and again.cached
    assert list(again.embeddings[0].unknown_words) == ["zzz"]
    assert list(again.embeddings[0].values) == list(fresh.embeddings[0].values)
