"""Hostile requests for every RPC, built from the service descriptors, and the checks.

`request_bytes(method)` is a hypothesis strategy of wire payloads for one
method: a message filled from its descriptor with extreme values (NaN, ±inf,
1e-45, 2^63, unknown enum numbers, 1 MB strings, control characters, path
traversal), then sent as is, truncated, with a wrong wire type, with garbage
appended, or replaced by random bytes. `call_raw` sends such bytes with a
generic (bytes in, bytes out) gRPC call and says how it ended; `check_outcome`
holds the contract: a documented code, a message without class names, paths or
tracebacks, a `google.rpc.BadRequest` detail with every INVALID_ARGUMENT, and
no call left hanging.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import Counter

import grpc
from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from hypothesis import strategies as st

from lattice.v1 import inference_pb2, registry_pb2, trainer_pb2

SERVICES = {
    "inference": inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    "registry": registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"],
    "trainer": trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
}

#: Streams that stay open by design (they wait for the next change).
LONG_LIVED = {"Watch", "WatchJob"}

MEGABYTE = "x" * (1024 * 1024)
STRINGS = (
    "",
    " ",
    "tiny-gpt",
    "tiny-gpt@1",
    "tiny-gpt:production",
    "tiny-enc",
    "hello",
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    "/etc/shadow",
    "lattice-artifact://sha256/" + "0" * 64,
    "a" * 64,
    "a" * 300,
    "\x00\x01\x02\x1b[31m\x7f",
    "\r\n\t\u2028\u202e",
    "名字 模型 测试",
    "\U0001f600" * 10,
    "%s%n{0}${jndi:x}",
    "'; DROP TABLE models; --",
    "9" * 40,
    "-1",
    MEGABYTE,
)
INTS = (0, 1, -1, 2, 7, 2**31 - 1, -(2**31), 2**32 - 1, 2**53 + 1, 2**63 - 1, -(2**63))
UINTS = (0, 1, 2, 7, 2**31, 2**32 - 1, 2**63, 2**64 - 1)
FLOATS = (
    0.0,
    -0.0,
    1e-45,
    5e-324,
    0.5,
    1.0,
    2.0,
    1e30,
    3.4e38,
    -1.0,
    math.nan,
    math.inf,
    -math.inf,
)

_T = FieldDescriptor
_SIGNED = {_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_SINT32, _T.TYPE_SINT64}
_SIGNED |= {_T.TYPE_SFIXED32, _T.TYPE_SFIXED64}
_UNSIGNED = {_T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_FIXED32, _T.TYPE_FIXED64}
_BITS = {
    _T.TYPE_INT32: 32,
    _T.TYPE_SINT32: 32,
    _T.TYPE_SFIXED32: 32,
    _T.TYPE_UINT32: 32,
    _T.TYPE_FIXED32: 32,
}


def _fits(value: int, field: FieldDescriptor) -> bool:
    bits = _BITS.get(field.type, 64)
    if field.type in _UNSIGNED:
        return 0 <= value < 2**bits
    return -(2 ** (bits - 1)) <= value < 2 ** (bits - 1)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy:
    kind = field.type
    if kind == _T.TYPE_STRING:
        return st.sampled_from(STRINGS) | st.text(max_size=24)
    if kind == _T.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == _T.TYPE_BOOL:
        return st.booleans()
    if kind in (_T.TYPE_FLOAT, _T.TYPE_DOUBLE):
        return st.sampled_from(FLOATS) | st.floats(allow_nan=True, width=32)
    if kind == _T.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from([*known, 99, -1, 2**31 - 1])
    pool = UINTS if kind in _UNSIGNED else INTS
    candidates = [v for v in pool if _fits(v, field)]
    return st.sampled_from(candidates) | st.integers(0, 100)


def _assign(message, field: FieldDescriptor, value) -> None:
    if field.is_repeated:
        getattr(message, field.name).append(value)
    else:
        setattr(message, field.name, value)


#: A request per method that would succeed (or nearly): fuzzing mutates a few of
#: its fields, so the hostile values reach the code behind validation.
TEMPLATES = {
    "Generate": 'model: "tiny-gpt" prompt: "hello" parameters { max_new_tokens: 2 }',
    "GenerateStream": 'model: "tiny-gpt" prompt: "hello" parameters { max_new_tokens: 2 }',
    "Embed": 'model: "tiny-enc" inputs: "hello"',
    "CreateModel": 'model { name: "fuzz-model" task: MODEL_TASK_TEXT_GENERATION }',
    "GetModel": 'name: "tiny-gpt"',
    "ListModels": "page_size: 5",
    "DeleteModel": 'name: "fuzz-model"',
    "CreateVersion": f'model_name: "fuzz-model" artifact_digest: "{"0" * 64}"',
    "GetVersion": 'model_name: "tiny-gpt" version: 1',
    "ListVersions": 'model_name: "tiny-gpt" page_size: 2',
    "UpdateVersionStatus": 'model_name: "fuzz-model" version: 1',
    "UploadArtifact": f'header {{ digest: "{"0" * 64}" size_bytes: 3 }}',
    "DownloadArtifact": f'digest: "{"0" * 64}"',
    "SetAlias": 'model_name: "tiny-gpt" alias: "fuzz" version: 1',
    "DeleteAlias": 'model_name: "tiny-gpt" alias: "fuzz"',
    "ListAliases": 'model_name: "tiny-gpt"',
    "ResolveModel": 'model: "tiny-gpt"',
    "GetDeployment": 'model_name: "tiny-gpt"',
    "ListDeployments": "page_size: 5",
    "UpdateDeployment": 'model_name: "fuzz-model" routes { version: 1 weight: 100 }',
    "ListDeploymentHistory": 'model_name: "tiny-gpt" page_size: 2',
    "GetPolicy": 'model_name: "tiny-gpt"',
    "SetPolicy": 'policy { model_name: "fuzz-model" }',
    "Watch": "",
    "PrepareDataset": (
        'spec { name: "fuzz" sources { path: "corpus.txt" } tokenizer { vocab_size: 300 } }'
    ),
    "GetDataset": 'dataset_id: "ds-1"',
    "ListDatasets": "page_size: 5",
    "SubmitJob": 'spec { family: MODEL_FAMILY_GPT2_CAUSAL_LM dataset_id: "ds-1" }',
    "GetJob": 'job_id: "job-1"',
    "ListJobs": "page_size: 5",
    "CancelJob": 'job_id: "job-1"',
    "WatchJob": 'job_id: "job-1"',
}


@st.composite
def messages(draw, descriptor: Descriptor, depth: int = 0, template: str = ""):
    """A message of `descriptor`'s type: `template` (text format) with a random
    subset of fields overwritten by hostile values (about a third of them; all
    fields are candidates when there is no template)."""
    message = message_factory.GetMessageClass(descriptor)()
    text_format.Parse(template, message)
    for field in descriptor.fields:
        if draw(st.integers(0, 2)) != 0:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 3))):
                key = draw(_scalar(key_field))
                value_strategy = (
                    messages(value_field.message_type, depth + 1)
                    if value_field.message_type is not None
                    else _scalar(value_field)
                )
                value = draw(value_strategy)
                if value_field.message_type is not None:  # map<_, Message>: copied in
                    getattr(message, field.name)[key].CopyFrom(value)
                else:
                    getattr(message, field.name)[key] = value
            continue
        count = draw(st.integers(0, 3)) if field.is_repeated else 1
        for _ in range(count):
            if field.message_type is not None:
                if depth >= 3:
                    break
                sub = draw(messages(field.message_type, depth + 1))
                if field.is_repeated:
                    getattr(message, field.name).add().CopyFrom(sub)
                else:
                    getattr(message, field.name).CopyFrom(sub)
            else:
                _assign(message, field, draw(_scalar(field)))
    return message


def _wrong_wire_type(data: bytes, flip: int) -> bytes:
    if not data:
        return bytes([0x0A, 0x05])  # field 1, length-delimited, 5 bytes that never come
    return bytes([data[0] ^ (flip % 7 + 1)]) + data[1:]


@st.composite
def request_bytes(draw, method: MethodDescriptor) -> bytes:
    """One wire payload for `method`: valid-looking, mangled or random."""
    shape = draw(
        st.sampled_from(["valid", "valid", "valid", "truncated", "wire", "junk", "random"])
    )
    if shape == "random":
        return draw(st.binary(max_size=256))
    template = TEMPLATES.get(method.name, "")
    data = draw(messages(method.input_type, template=template)).SerializeToString()
    if shape == "truncated" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if shape == "wire":
        return _wrong_wire_type(data, draw(st.integers(0, 6)))
    if shape == "junk":
        return data + draw(st.binary(min_size=1, max_size=16))
    return data


class Tally:
    """Status codes of every fuzzed call in this run, for the summary line."""

    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.started: float | None = None

    def count(self, outcome: Outcome) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self.codes[outcome.code.name] += 1

    def summary(self) -> str:
        seconds = time.monotonic() - (self.started or time.monotonic())
        codes = ", ".join(f"{code} {n:,}" for code, n in self.codes.most_common())
        return f"fuzz: {self.codes.total():,} requests in {seconds:.0f}s: {codes}"


TALLY = Tally()


@dataclasses.dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    bad_request: bool
    method: str
    hung: bool = False


def _outcome(method: str, error: grpc.RpcError) -> Outcome:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    bad = False
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = True
    return Outcome(error.code(), error.details() or "", bad, method)  # type: ignore[attr-defined]


def call_raw(
    channel: grpc.Channel,
    path: str,
    method: MethodDescriptor,
    payloads: list[bytes],
    metadata: list[tuple[str, str]],
    *,
    timeout: float,
    stream_mode: str = "read",
) -> Outcome:
    """Send `payloads` (one, or a stream of them) to `path`; how the call ended.

    Server streams are read to the end (`read`), cancelled after the first
    message (`cancel`) or dropped unread (`abandon`).
    """
    try:
        if method.client_streaming:
            channel.stream_unary(path)(iter(payloads), metadata=metadata, timeout=timeout)
        elif method.server_streaming:
            call = channel.unary_stream(path)(payloads[0], metadata=metadata, timeout=timeout)
            if stream_mode == "abandon":
                call.cancel()
            else:
                for _ in call:
                    if stream_mode == "cancel":
                        call.cancel()
                        break
        else:
            channel.unary_unary(path)(payloads[0], metadata=metadata, timeout=timeout)
    except grpc.RpcError as error:
        outcome = _outcome(path, error)
        if outcome.code == grpc.StatusCode.DEADLINE_EXCEEDED and method.name not in LONG_LIVED:
            outcome.hung = True
        return outcome
    return Outcome(grpc.StatusCode.OK, "", False, path)


#: Words that mark a leaked exception: class names and traceback lines.
_LEAKS = re.compile(
    r"Traceback|File \"|<class |\b[A-Z][A-Za-z]*(?:Error|Exception)\b|\.py\b|site-packages"
    # grpc's own words when a status is lost (metadata overflow, a write race):
    r"|Stream removed|metadata size|from Core"
)


def check_outcome(outcome: Outcome, server_paths: tuple[str, ...]) -> None:
    """The contract every answer to hostile input keeps."""
    where = f"{outcome.method}: {outcome.code.name} {outcome.details[:300]!r}"
    assert not outcome.hung, f"hung past its deadline: {where}"
    assert outcome.code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), where
    assert not _LEAKS.search(outcome.details), f"leaks an exception: {where}"
    for path in server_paths:
        assert path not in outcome.details, f"leaks a server path: {where}"
    assert len(outcome.details) <= 2048, f"echoes {len(outcome.details)} characters: {where}"
    if outcome.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert outcome.bad_request, f"INVALID_ARGUMENT without a BadRequest detail: {where}"
