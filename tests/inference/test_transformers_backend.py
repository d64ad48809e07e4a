"""The local transformers backend, driven directly (no gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import pytest

from lattice.errors import FailedPrecondition, InvalidArgument
from services.inference.backends import FinishReason, GenerationParams, LoadSpec, Task
from services.inference.transformers_backend import TransformersBackend
from services.suite.embedded import poll


@pytest.fixture
async def lm(model_dirs):
    backend = TransformersBackend(LoadSpec("lm", 1, Task.GENERATE, model_dir=model_dirs["lm1"]))
    info = await backend.load()
    assert info.context_length == 512
    yield backend
    await backend.unload()


@pytest.fixture
async def encoder(model_dirs):
    backend = TransformersBackend(LoadSpec("enc", 1, Task.EMBED, model_dir=model_dirs["enc"]))
    info = await backend.load()
    assert info.embedding_dim == 64
    yield backend
    await backend.unload()


async def test_greedy_is_deterministic_and_counts_tokens(lm):
    params = GenerationParams(max_new_tokens=12)
    first = await lm.generate("Once upon a time", params)
    second = await lm.generate("Once upon a time", params)
    assert first == second
    assert first.completion_tokens == 12
    assert first.finish_reason is FinishReason.LENGTH
    assert first.prompt_tokens == lm.count_tokens("Once upon a time")


async def test_seeded_sampling_repeats_and_seeds_differ(lm):
    def params(seed):
        return GenerationParams(
            max_new_tokens=24, temperature=1.5, top_p=0.95, top_k=100, seed=seed
        )

    a = await lm.generate("Hello", params(7))
    b = await lm.generate("Hello", params(7))
    c = await lm.generate("Hello", params(8))
    assert a == b
    assert a.text != c.text


async def test_top_k_one_equals_greedy(lm):
    greedy = await lm.generate("The stars", GenerationParams(max_new_tokens=10))
    top1 = await lm.generate(
        "The stars", GenerationParams(max_new_tokens=10, temperature=1.0, top_k=1, seed=3)
    )
    assert top1.text == greedy.text


async def test_stop_sequence_ends_generation_and_is_not_included(lm):
    full = await lm.generate("Once upon a time", GenerationParams(max_new_tokens=30))
    stop = full.text[5:9]  # a piece of what greedy decoding produces
    cut = full.text.index(stop)
    stopped = await lm.generate(
        "Once upon a time", GenerationParams(max_new_tokens=30, stop=(stop,))
    )
    assert stopped.finish_reason is FinishReason.STOP_SEQUENCE
    assert stopped.text == full.text[:cut]
    assert stop not in stopped.text


async def test_stream_deltas_add_up_to_the_unary_text(lm):
    params = GenerationParams(max_new_tokens=20)
    unary = await lm.generate("Hello world", params)
    chunks = [c async for c in lm.stream("Hello world", params)]
    assert "".join(c.delta for c in chunks) == unary.text
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].completion_tokens == 20
    assert chunks[-1].finish_reason is FinishReason.LENGTH


async def test_closing_a_stream_after_three_chunks_stops_the_model_within_50ms(lm):
    params = GenerationParams(max_new_tokens=500)
    stream = lm.stream("Once upon a time", params)
    received = 0
    async for chunk in stream:
        if chunk.delta:
            received += 1
        if received == 3:
            break
    produced_at_cancel = lm.tokens_generated
    cancelled_at = time.perf_counter()
    await stream.aclose()
    await poll(lambda: not lm.active_generations, 1.0)
    assert time.perf_counter() - cancelled_at < 0.05
    # A handful of tokens at most, not the 500 asked for.
    assert lm.tokens_generated - produced_at_cancel < 50
    assert lm.tokens_generated < 100


async def test_cancelling_a_unary_call_stops_the_model(lm):
    task = asyncio.create_task(lm.generate("Hello", GenerationParams(max_new_tokens=500)))
    await poll(lambda: lm.tokens_generated >= 3, 5.0)
    task.cancel()
    cancelled_at = time.perf_counter()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await poll(lambda: not lm.active_generations, 1.0)
    assert time.perf_counter() - cancelled_at < 0.05
    assert lm.tokens_generated < 100


async def test_prompt_longer_than_the_context_is_invalid(lm):
    with pytest.raises(InvalidArgument) as error:
        await lm.generate("word " * 600, GenerationParams(max_new_tokens=4))
    assert error.value.field == "prompt"


async def test_embeddings_are_pooled_normalised_and_in_order(encoder):
    texts = ["hello world", "the quick brown fox jumps over the lazy dog"]
    raw = await encoder.embed(texts, normalize=False)
    unit = await encoder.embed(texts, normalize=True)
    assert len(raw.vectors) == 2 and len(raw.vectors[0]) == 64
    for vector in unit.vectors:
        assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-5)
    norm = math.sqrt(sum(v * v for v in raw.vectors[1]))
    assert unit.vectors[1][0] == pytest.approx(raw.vectors[1][0] / norm, rel=1e-5)
    # Each text gets the vector it would get alone (padding does not leak in).
    alone = await encoder.embed([texts[0]], normalize=False)
    assert alone.vectors[0] == pytest.approx(raw.vectors[0], abs=1e-5)
    assert raw.token_counts[0] < raw.token_counts[1]


async def test_the_batch_tokenizer_matches_the_transformers_call(encoder):
    """The fast path (a private Rust tokenizer set up once) gives exactly the
    tensors of `tokenizer(texts, padding=True, truncation=True)`, truncation of
    a text longer than the context included."""
    import torch

    texts = ["hi", "the quick brown fox jumps over the lazy dog " * 3, "word " * 900]
    got, counts = encoder._batch_tokenizer.encode(texts)
    want = encoder._tokenizer(
        texts, padding=True, truncation=True, max_length=512, return_tensors="pt"
    )
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert counts == want["attention_mask"].sum(dim=1).tolist()
    assert counts[2] == 512


async def test_task_mismatch_is_a_failed_precondition(lm, encoder):
    with pytest.raises(FailedPrecondition):
        await lm.embed(["x"], normalize=False)
    with pytest.raises(FailedPrecondition):
        await encoder.generate("x", GenerationParams())


MIXED = [
    ("Hello", GenerationParams(max_new_tokens=40)),
    ("Once upon a time", GenerationParams(max_new_tokens=10)),
    ("The stars were bright", GenerationParams(max_new_tokens=30, temperature=0.9, seed=5)),
    ("Green trees", GenerationParams(max_new_tokens=20, top_k=20, temperature=1.2, seed=1)),
    ("Hello world", GenerationParams(max_new_tokens=30, stop=("am",))),
]


async def test_concurrent_requests_each_get_their_own_answer(lm):
    alone = [await lm.generate(prompt, params) for prompt, params in MIXED]
    together = await asyncio.gather(*(lm.generate(prompt, params) for prompt, params in MIXED))
    assert list(together) == alone
    assert lm.scheduler.kv_tokens == 0  # every row left and freed its cache first


async def test_a_bad_request_fails_alone(lm):
    results = await asyncio.gather(
        lm.generate("Hello", GenerationParams(max_new_tokens=8)),
        lm.generate("word " * 600, GenerationParams(max_new_tokens=8)),
        return_exceptions=True,
    )
    assert results[0] == await lm.generate("Hello", GenerationParams(max_new_tokens=8))
    assert isinstance(results[1], InvalidArgument)
