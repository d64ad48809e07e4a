"""Batching over gRPC: micro-batched Embed, continuously batched Generate."""

from __future__ import annotations

import asyncio
import math

import pytest

from lattice.v1 import inference_pb2
from services.inference.backends import GenerationParams
from services.suite.embedded import deploy_encoder, deploy_lm, generate_request

TEXTS = [f"sentence number {i} about the quick brown fox" for i in range(24)]


async def test_concurrent_requests_are_batched_and_answered_individually(lab, model_dirs):
    await deploy_encoder(lab, model_dirs)
    requests = [
        inference_pb2.EmbedRequest(model="enc", inputs=[t], normalize=i % 2 == 0, skip_cache=True)
        for i, t in enumerate(TEXTS)
    ]
    batched = await asyncio.gather(*(lab.stub.Embed(r) for r in requests))
    labels = {"gen_ai_request_model": "enc"}
    batches = lab.metric("lattice_inference_batch_size_count", labels)
    rows = lab.metric("lattice_inference_batch_size_sum", labels)
    assert rows == len(TEXTS)
    assert batches < len(TEXTS)  # merged, not one backend call each
    # Each answer is what the text gets alone, normalised as asked.
    backend = lab.backend("enc", 1)
    for i, (request, response) in enumerate(zip(requests, batched, strict=True)):
        alone = await backend.embed([TEXTS[i]], normalize=request.normalize)
        assert list(response.embeddings[0].values) == pytest.approx(alone.vectors[0], abs=1e-4)
        norm = math.sqrt(sum(v * v for v in response.embeddings[0].values))
        assert (abs(norm - 1) < 1e-4) == request.normalize
        assert response.usage.prompt_tokens == alone.token_counts[0]


async def test_embeddings_are_cached(cached_lab, model_dirs):
    lab = cached_lab
    await deploy_encoder(lab, model_dirs)
    request = inference_pb2.EmbedRequest(model="enc", inputs=["a", "b c"], normalize=True)
    first = await lab.stub.Embed(request)
    second = await lab.stub.Embed(request)
    assert not first.cached and second.cached
    assert [list(e.values) for e in second.embeddings] == [list(e.values) for e in first.embeddings]


async def test_concurrent_generations_share_decode_steps_and_match_alone(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    prompts = [f"Story {i}: once upon a time" for i in range(12)]
    responses = await asyncio.gather(
        *(lab.stub.Generate(generate_request("lm", prompt=p, max_new_tokens=16)) for p in prompts)
    )
    labels = {"gen_ai_request_model": "lm", "version": "1", "phase": "decode"}
    rows = lab.metric("lattice_inference_step_batch_size_sum", labels)
    steps = lab.metric("lattice_inference_step_batch_size_count", labels)
    assert rows / steps > 2  # several sequences per forward pass, not one each
    backend = lab.backend("lm", 1)
    for prompt, response in zip(prompts, responses, strict=True):
        alone = await backend.generate(prompt, GenerationParams(max_new_tokens=16))
        assert response.text == alone.text
