"""Trainer calls through the real gateway to the real trainer: datasets, job submit,
watch, list, cancel (a real torchrun process group is started and stopped)."""

from __future__ import annotations

import json

import pytest

import lattice
from lattice.v1 import trainer_pb2

pytestmark = pytest.mark.slow

CORPUS = [
    f"Document {i}: the quick brown fox number {i} jumps over the lazy dog {i % 7} times."
    for i in range(60)
]


def test_datasets_jobs_watch_and_cancel(stack, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"text": text}) for text in CORPUS * 2]  # the second copy: duplicates
    corpus.write_text("\n".join(lines) + "\n")
    with lattice.Client(stack.gateway, stack.token) as client:
        # The trainer reads only the tenant's source directory: upload the file there.
        sent = client.upload_sources(corpus)
        dataset = client.prepare_dataset(
            "sdk-docs",
            [sent.directory],
            vocab_size=300,
            validation_fraction=0.1,
            seed=1,
            cleaning={"deduplicate": True, "normalizeWhitespace": True},
        )
        assert dataset.id.startswith("sdk-docs-")
        assert (dataset.report.documents_in, dataset.report.documents_out) == (120, 60)
        assert client.get_dataset(dataset.id).digest == dataset.digest
        assert dataset.id in [d.id for d in client.list_datasets()]

        with pytest.raises(lattice.InvalidArgument) as invalid:
            client.submit_job({"datasetId": dataset.id})  # no family
        assert invalid.value.field
        with pytest.raises(lattice.LatticeError) as unknown:
            client.submit_job({"family": "MODEL_FAMILY_GPT2_CAUSAL_LM", "datasetId": "nope-1"})
        assert isinstance(unknown.value, lattice.NotFound | lattice.FailedPrecondition)

        spec = {
            "family": "MODEL_FAMILY_GPT2_CAUSAL_LM",
            "datasetId": dataset.id,
            "architecture": {"numLayers": 1, "numHeads": 2, "hiddenSize": 32, "maxPositions": 64},
            "hyperparameters": {"maxSteps": 100000, "batchSize": 2, "sequenceLength": 32},
            "distributed": {"processesPerNode": 1},
            "registration": {"modelName": "sdk-never-registered"},
        }
        job = client.submit_job(spec, request_id="sdk-cancel-1")
        assert client.submit_job(spec, request_id="sdk-cancel-1").id == job.id  # idempotent
        assert job.id in [j.id for j in client.list_jobs()]
        with client.watch_job(job.id) as events:
            for event in events:
                if event.HasField("job") and event.job.state == trainer_pb2.JOB_STATE_RUNNING:
                    break
        client.cancel_job(job.id)
        final = client.wait_job(job.id, timeout=60)
        assert final.state == trainer_pb2.JOB_STATE_CANCELLED
        assert client.get_job(job.id).state == trainer_pb2.JOB_STATE_CANCELLED
        assert job.id in [j.id for j in client.list_jobs(["cancelled"])]
