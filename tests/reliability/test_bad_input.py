"""Hostile or odd input gets a documented code and a clear message (issue 21, defects 1-4).

Each test names the defect it pins; all of them failed before the fix (UNKNOWN
with a class name, INTERNAL, a transport error, or a hang).
"""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from lattice.v1 import inference_pb2, registry_pb2, trainer_pb2
from tests.sdk.real_stack import MODEL

MEGABYTE_ID = "x" * 1_000_000
_BIG = [("grpc.max_send_message_length", 16 * 1024 * 1024)]

GENERATE = "/lattice.v1.InferenceService/Generate"
UPLOAD = "/lattice.v1.ModelRegistryService/UploadArtifact"
LIST_JOBS = "/lattice.v1.TrainerService/ListJobs"
WATCH_JOB = "/lattice.v1.TrainerService/WatchJob"
PREPARE = "/lattice.v1.TrainerService/PrepareDataset"


def _call(address, path, payload, *, token=None, stream=False, client_stream=False):
    """Send raw `payload` bytes; returns (code, details, BadRequest field names).
    `token`: the bearer token (None: none; internal services need an internal one)."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address, options=_BIG) as channel:
        try:
            if client_stream:
                channel.stream_unary(path)(iter(payload), metadata=metadata, timeout=10)
            elif stream:
                list(channel.unary_stream(path)(payload, metadata=metadata, timeout=10))
            else:
                channel.unary_unary(path)(payload, metadata=metadata, timeout=10)
        except grpc.RpcError as error:
            status = rpc_status.from_call(error)
            fields = []
            for detail in status.details if status else ():
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    fields += [v.field for v in bad.field_violations]
            return error.code(), error.details(), fields
    return grpc.StatusCode.OK, "", []


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("inference", GENERATE),
        ("registry", "/lattice.v1.ModelRegistryService/GetModel"),
        ("trainer", "/lattice.v1.TrainerService/GetJob"),
    ],
)
@pytest.mark.parametrize("front", ["direct", "gateway"])
def test_malformed_bytes_are_invalid_argument_not_unknown(stack, service, path, front):
    """Defect 1: bytes that do not parse gave UNKNOWN with a Python class name."""
    address = stack.gateway if front == "gateway" else stack.address(service)
    code, details, fields = _call(
        address, path, b"\xff\xff\xff\xff", token=stack.token_for(address)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fields == ["request"]
    assert "Error" not in details and "class" not in details


def test_gateway_authenticates_before_parsing(stack):
    """Defect 1: the gateway parsed the body of an unauthenticated caller first."""
    code, _, _ = _call(stack.gateway, GENERATE, b"\xff\xff\xff\xff")
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_gateway_refuses_a_10_mb_prompt_at_its_edge(stack):
    """Defect 15: a 10 MB prompt was forwarded to inference."""
    request = inference_pb2.GenerateRequest(model=MODEL, prompt="a" * 10_000_000)
    code, details, fields = _call(
        stack.gateway, GENERATE, request.SerializeToString(), token=stack.token_for(stack.gateway)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert fields == ["request"] and "at most" in details


def test_denormal_temperature_is_greedy_not_internal(stack):
    """Defect 2: temperature 1e-45 made the sampler divide by ~0 (INTERNAL)."""
    request = inference_pb2.GenerateRequest(model=MODEL, prompt="hello", skip_cache=True)
    request.parameters.max_new_tokens = 3
    request.parameters.temperature = 1e-45
    for front in (stack.address("inference"), stack.gateway):
        code, details, _ = _call(
            front, GENERATE, request.SerializeToString(), token=stack.token_for(front)
        )
        assert code == grpc.StatusCode.OK, details


@pytest.mark.parametrize(
    ("path", "message", "field"),
    [
        (LIST_JOBS, trainer_pb2.ListJobsRequest(page_token="9" * 30), "page_token"),
        (LIST_JOBS, trainer_pb2.ListJobsRequest(page_token="\u00b9"), "page_token"),
        (
            WATCH_JOB,
            trainer_pb2.WatchJobRequest(job_id="j", from_sequence=2**64 - 1),
            "from_sequence",
        ),
    ],
)
def test_sqlite_integer_overflow_is_invalid_argument(stack, path, message, field):
    """Defect 2: integers past SQLite's 64 bits (or odd digits) gave INTERNAL."""
    trainer = stack.address("trainer")
    code, details, fields = _call(
        trainer,
        path,
        message.SerializeToString(),
        token=stack.token_for(trainer),
        stream=path == WATCH_JOB,
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fields == [field]


def _prepare(source: trainer_pb2.DataSource, **tokenizer) -> bytes:
    spec = trainer_pb2.DatasetSpec(name="bad-input", sources=[source])
    spec.tokenizer.MergeFrom(trainer_pb2.TokenizerOptions(**tokenizer))
    return trainer_pb2.PrepareDatasetRequest(spec=spec).SerializeToString()


def test_unknown_tokenizer_kind_is_invalid_argument(stack):
    """Defect 2: an unknown tokenizer kind failed at the end of preparation (INTERNAL)."""
    corpus = stack.root / "sources" / "acme" / "bad-input" / "corpus.txt"  # the tenant's root
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.write_text("one two three\n\nfour five six\n", encoding="utf-8")
    payload = _prepare(trainer_pb2.DataSource(path=str(corpus)), kind=99)
    code, details, fields = _call(
        stack.address("trainer"), PREPARE, payload, token=stack.token_for(stack.address("trainer"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fields == ["spec.tokenizer.kind"]


def test_path_longer_than_255_characters_is_invalid_argument(stack):
    """Defect 2: a path with a component over NAME_MAX raised OSError (INTERNAL)."""
    payload = _prepare(trainer_pb2.DataSource(path="d" * 300 + ".txt"))
    code, details, fields = _call(
        stack.address("trainer"), PREPARE, payload, token=stack.token_for(stack.address("trainer"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert fields == ["spec.sources[0].path"]
    assert len(details) < 300


@pytest.mark.parametrize("front", ["direct", "gateway"])
def test_upload_parse_failure_answers_at_once(stack, front):
    """Defects 2 and 3: a bad UploadArtifact message gave INTERNAL, and hung the gateway."""
    header = registry_pb2.UploadArtifactRequest(
        header=registry_pb2.ArtifactHeader(digest="0" * 64, size_bytes=3)
    )
    address = stack.gateway if front == "gateway" else stack.address("registry")
    for payloads in ([header.SerializeToString(), b"\xff\xff"], [b"\x12\x00", b"\x0a\x00"]):
        code, details, fields = _call(
            address, UPLOAD, payloads, token=stack.token_for(address), client_stream=True
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert fields


_BIG_ID_CASES = [
    ("/lattice.v1.TrainerService/GetJob", trainer_pb2.GetJobRequest(job_id=MEGABYTE_ID)),
    (
        "/lattice.v1.TrainerService/GetDataset",
        trainer_pb2.GetDatasetRequest(dataset_id=MEGABYTE_ID),
    ),
    (
        "/lattice.v1.TrainerService/SubmitJob",
        trainer_pb2.SubmitJobRequest(spec=trainer_pb2.JobSpec(family=1, dataset_id=MEGABYTE_ID)),
    ),
]


@pytest.mark.parametrize(("path", "message"), _BIG_ID_CASES)
@pytest.mark.parametrize("front", ["direct", "gateway"])
def test_a_1_mb_id_is_not_echoed_whole(stack, path, message, front):
    """Defect 2: a 1 MB id echoed into the status overflowed the metadata limit."""
    address = stack.gateway if front == "gateway" else stack.address("trainer")
    code, details, _ = _call(
        address, path, message.SerializeToString(), token=stack.token_for(address)
    )
    assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION), details
    assert len(details) <= 1024


def test_messages_name_no_server_paths(stack):
    """Defect 4: error messages carried the server's own file paths."""
    payload = _prepare(trainer_pb2.DataSource(path="missing/corpus.txt"))
    code, details, _ = _call(
        stack.address("trainer"), PREPARE, payload, token=stack.token_for(stack.address("trainer"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(stack.root) not in details
