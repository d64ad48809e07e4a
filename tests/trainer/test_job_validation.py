"""Bad job specs fail before anything starts, with the right status code."""

from __future__ import annotations

import grpc
import pytest

from lattice.v1 import trainer_pb2

from .conftest import tiny_gpt2_job


@pytest.fixture
async def dataset(trainer, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n\n".join(f"line {i} says {i * 31 % 97} things about topic {i % 13}" for i in range(400))
    )
    spec = trainer_pb2.DatasetSpec(
        name="small",
        sources=[trainer_pb2.DataSource(path=str(corpus))],
        tokenizer=trainer_pb2.TokenizerOptions(vocab_size=300),
    )
    return (await trainer.PrepareDataset(trainer_pb2.PrepareDatasetRequest(spec=spec))).dataset


CASES = [
    ({"family": 0}, grpc.StatusCode.INVALID_ARGUMENT, "spec.family"),
    ({"hyperparameters__learning_rate": 5.0}, grpc.StatusCode.INVALID_ARGUMENT, "learning_rate"),
    ({"hyperparameters__learning_rate": -1e-3}, grpc.StatusCode.INVALID_ARGUMENT, "learning_rate"),
    (
        {"hyperparameters__sequence_length": 512},
        grpc.StatusCode.INVALID_ARGUMENT,
        "sequence_length",
    ),
    ({"architecture__hidden_size": 65}, grpc.StatusCode.INVALID_ARGUMENT, "hidden_size"),
    ({"hyperparameters__gradient_clip_norm": -1.0}, grpc.StatusCode.INVALID_ARGUMENT, "clip"),
    ({"registration__model_name": ""}, grpc.StatusCode.INVALID_ARGUMENT, "model_name"),
    ({"registration__canary_weight": 101}, grpc.StatusCode.INVALID_ARGUMENT, "canary_weight"),
    ({"dataset_id": ""}, grpc.StatusCode.INVALID_ARGUMENT, "dataset_id"),
    ({"dataset_id": "nope-123456789abc"}, grpc.StatusCode.FAILED_PRECONDITION, "does not exist"),
    ({"distributed__processes_per_node": 64}, grpc.StatusCode.FAILED_PRECONDITION, "exceeds"),
    ({"distributed__nodes": 2}, grpc.StatusCode.FAILED_PRECONDITION, "multi-node"),
    (
        {"distributed__backend": trainer_pb2.DISTRIBUTED_BACKEND_NCCL},
        grpc.StatusCode.FAILED_PRECONDITION,
        "GPU",
    ),
    ({"hyperparameters__batch_size": 4000}, grpc.StatusCode.FAILED_PRECONDITION, "blocks"),
    ({"base_model": "not a ref!"}, grpc.StatusCode.INVALID_ARGUMENT, "base_model"),
    ({"base_model": "ghost:1"}, grpc.StatusCode.NOT_FOUND, "ghost"),
]


@pytest.mark.parametrize(("overrides", "code", "mention"), CASES)
async def test_bad_job_specs(trainer, dataset, overrides, code, mention):
    values = {"dataset_id": dataset.id, **overrides}
    spec = tiny_gpt2_job(values.pop("dataset_id"), "bad-spec", **values)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))
    assert caught.value.code() == code, caught.value.details()
    assert mention in caught.value.details()
    listed = await trainer.ListJobs(trainer_pb2.ListJobsRequest())
    assert list(listed.jobs) == []  # nothing was queued


async def test_bert_needs_a_wordpiece_dataset_and_request_id_is_idempotent(trainer, dataset):
    spec = tiny_gpt2_job(dataset.id, "bert", family=trainer_pb2.MODEL_FAMILY_BERT_MASKED_LM)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.GetJob(trainer_pb2.GetJobRequest(job_id="job-nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.ListJobs(trainer_pb2.ListJobsRequest(page_token="garbage"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


TP = trainer_pb2.DISTRIBUTED_STRATEGY_TENSOR_PARALLEL
HYBRID = trainer_pb2.DISTRIBUTED_STRATEGY_HYBRID
PP = trainer_pb2.DISTRIBUTED_STRATEGY_PIPELINE_PARALLEL

PARALLEL_CASES = [
    # An unknown enum value used to run silently as DDP.
    ({"distributed__strategy": 3}, "unknown strategy 3"),
    # HYBRID 2 x 2 needs 4 processes, not 3.
    (
        {
            "distributed__strategy": HYBRID,
            "distributed__processes_per_node": 3,
            "distributed__tensor_parallel_size": 2,
        },
        "must tile the 3 processes",
    ),
    (
        {
            "distributed__strategy": TP,
            "distributed__processes_per_node": 2,
            "distributed__tensor_parallel_size": 4,
        },
        "uses all 2 processes",
    ),
    # 3 heads (hidden 66) cannot be split over 2 ranks.
    (
        {
            "distributed__strategy": TP,
            "distributed__processes_per_node": 2,
            "architecture__num_heads": 3,
            "architecture__hidden_size": 66,
        },
        "3 attention heads do not divide across 2",
    ),
    (
        {
            "distributed__strategy": PP,
            "distributed__processes_per_node": 2,
            "architecture__num_layers": 1,
        },
        "PIPELINE_PARALLEL needs 2..num_layers (1)",
    ),
    ({"distributed__tensor_parallel_size": 2}, "only TENSOR_PARALLEL"),
    (
        {
            "distributed__strategy": PP,
            "distributed__processes_per_node": 2,
            "distributed__pipeline_schedule": 9,
        },
        "unknown schedule 9",
    ),
    (
        {
            "distributed__strategy": PP,
            "distributed__processes_per_node": 2,
            "distributed__pipeline_micro_batches": 1,
            "distributed__pipeline_schedule": trainer_pb2.PIPELINE_SCHEDULE_1F1B,
        },
        "1F1B needs at least one micro-batch per stage (2)",
    ),
    (
        {
            "distributed__strategy": TP,
            "distributed__processes_per_node": 2,
            "distributed__pipeline_schedule": trainer_pb2.PIPELINE_SCHEDULE_1F1B,
        },
        "only PIPELINE_PARALLEL takes micro-batches and a schedule",
    ),
    (
        {"distributed__pipeline_schedule": trainer_pb2.PIPELINE_SCHEDULE_1F1B},
        "PIPELINE_PARALLEL and HYBRID take a mesh",
    ),
    ({"alerts__non_finite": 9}, "unknown alert action"),
    ({"alerts__lr_reduction_factor": 2.0}, "lr_reduction_factor"),
    ({"max_validation_loss": -1.0}, "max_validation_loss"),
]


@pytest.mark.parametrize(("overrides", "mention"), PARALLEL_CASES)
async def test_bad_parallel_and_health_specs(trainer, dataset, overrides, mention):
    spec = tiny_gpt2_job(dataset.id, "bad-spec", **overrides)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await trainer.SubmitJob(trainer_pb2.SubmitJobRequest(spec=spec))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert mention in caught.value.details()
    assert list((await trainer.ListJobs(trainer_pb2.ListJobsRequest())).jobs) == []
