"""Request messages built from plain Python arguments, shared by both clients.

The sync and async clients differ only in how they call; what they send is
built here once.
"""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from lattice import artifacts as _artifacts
from lattice.errors import InvalidArgument
from lattice.v1 import common_pb2, inference_pb2, registry_pb2, trainer_pb2

_TASKS = {
    "text-generation": common_pb2.MODEL_TASK_TEXT_GENERATION,
    "embedding": common_pb2.MODEL_TASK_EMBEDDING,
    "classification": common_pb2.MODEL_TASK_CLASSIFICATION,
}
_FORMATS = {
    "transformers": common_pb2.ARTIFACT_FORMAT_TRANSFORMERS,
    "triton": common_pb2.ARTIFACT_FORMAT_TRITON,
    "word-vectors": common_pb2.ARTIFACT_FORMAT_WORD_VECTORS,
}
_TOKENIZERS = {
    "bpe": trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE,
    "wordpiece": trainer_pb2.TOKENIZER_KIND_WORDPIECE,
}
_STATUSES = {
    "ready": registry_pb2.VERSION_STATUS_READY,
    "archived": registry_pb2.VERSION_STATUS_ARCHIVED,
}
TASK_NAMES = tuple(_TASKS)
FORMAT_NAMES = tuple(_FORMATS)
TOKENIZER_NAMES = tuple(_TOKENIZERS)


def _choice(table: Mapping[str, int], value: str | int, field: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(field, f"{value!r} is not one of {', '.join(table)}") from None


def model_task(value: str | int) -> int:
    return _choice(_TASKS, value, "task")


def task_name(value: int) -> str:
    return next((name for name, v in _TASKS.items() if v == value), "unspecified")


def artifact_format(value: str | int) -> int:
    return _choice(_FORMATS, value, "format")


def format_name(value: int) -> str:
    return next((name for name, v in _FORMATS.items() if v == value), "unspecified")


def version_status(value: str | int) -> int:
    return _choice(_STATUSES, value, "status")


def generation_parameters(
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    stop: Sequence[str] = (),
    seed: int | None = None,
) -> inference_pb2.GenerationParameters:
    params = inference_pb2.GenerationParameters(
        max_new_tokens=max_new_tokens or 0, top_k=top_k or 0, stop=list(stop)
    )
    if temperature is not None:
        params.temperature = temperature
    if top_p is not None:
        params.top_p = top_p
    if seed is not None:
        params.seed = seed
    return params


def generate(model: str, prompt: str, **kwargs: Any) -> inference_pb2.GenerateRequest:
    skip_cache = kwargs.pop("skip_cache", False)
    routing_key = kwargs.pop("routing_key", "")
    return inference_pb2.GenerateRequest(
        model=model,
        prompt=prompt,
        parameters=generation_parameters(**kwargs),
        skip_cache=skip_cache,
        routing_key=routing_key,
    )


def generate_stream(model: str, prompt: str, **kwargs: Any) -> inference_pb2.GenerateStreamRequest:
    unary = generate(model, prompt, **kwargs)
    request = inference_pb2.GenerateStreamRequest()
    request.ParseFromString(unary.SerializeToString())  # same field numbers by design
    return request


def embed(
    model: str,
    inputs: Sequence[str],
    normalize: bool = False,
    skip_cache: bool = False,
    routing_key: str = "",
) -> inference_pb2.EmbedRequest:
    if isinstance(inputs, str):
        inputs = [inputs]
    return inference_pb2.EmbedRequest(
        model=model,
        inputs=list(inputs),
        normalize=normalize,
        skip_cache=skip_cache,
        routing_key=routing_key,
    )


def similar_words(
    model: str, query: str | Sequence[float], top_k: int = 10, routing_key: str = ""
) -> inference_pb2.SimilarWordsRequest:
    request = inference_pb2.SimilarWordsRequest(model=model, top_k=top_k, routing_key=routing_key)
    if isinstance(query, str):
        request.word = query
    else:
        request.vector.values.extend(float(v) for v in query)
    return request


def create_model(
    name: str,
    task: str | int = "text-generation",
    description: str = "",
    labels: Mapping[str, str] | None = None,
) -> registry_pb2.CreateModelRequest:
    return registry_pb2.CreateModelRequest(
        model=registry_pb2.Model(
            name=name,
            task=model_task(task),
            description=description,
            labels=dict(labels or {}),
        )
    )


def create_version(
    model: str,
    artifact_uri: str,
    artifact_digest: str,
    format: str | int = "transformers",
    *,
    training_job_id: str = "",
    dataset_digest: str = "",
    base_version: int = 0,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str = "",
) -> registry_pb2.CreateVersionRequest:
    return registry_pb2.CreateVersionRequest(
        model_name=model,
        artifact_uri=artifact_uri,
        artifact_digest=artifact_digest,
        format=artifact_format(format),
        lineage=registry_pb2.Lineage(
            training_job_id=training_job_id,
            dataset_digest=dataset_digest,
            base_version=base_version,
        ),
        metrics=dict(metrics or {}),
        params=dict(params or {}),
        tags=dict(tags or {}),
        description=description,
    )


def artifact_bytes(source: Any) -> bytes:
    """A directory is packed deterministically; bytes are sent as they are."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    return _artifacts.pack_directory(source)


def upload_messages(data: bytes) -> Iterator[registry_pb2.UploadArtifactRequest]:
    """The header, then the bytes in chunks of at most 1 MiB."""
    header = registry_pb2.ArtifactHeader(
        digest=_artifacts.sha256_hex(data),
        size_bytes=len(data),
        content_type=_artifacts.CONTENT_TYPE,
    )
    yield registry_pb2.UploadArtifactRequest(header=header)
    for chunk in _artifacts.iter_chunks(data):
        yield registry_pb2.UploadArtifactRequest(chunk=chunk)


def routes(weights: Mapping[int, int]) -> list[registry_pb2.Route]:
    """{version: weight} as routes, in version order."""
    return [
        registry_pb2.Route(version=int(version), weight=int(weight))
        for version, weight in sorted(weights.items())
    ]


def update_deployment(
    model: str,
    weights: Mapping[int, int],
    shadow: int = 0,
    reason: str = "",
    expected_revision: int = 0,
) -> registry_pb2.UpdateDeploymentRequest:
    return registry_pb2.UpdateDeploymentRequest(
        model_name=model,
        routes=routes(weights),
        shadow_version=shadow,
        reason=reason,
        expected_revision=expected_revision,
    )


def set_policy(
    model: str,
    *,
    allowed_tenants: Iterable[str] = (),
    max_new_tokens: int = 0,
    max_prompt_tokens: int = 0,
    min_rollout_interval: float | None = None,
    expected_revision: int = 0,
) -> registry_pb2.SetPolicyRequest:
    policy = registry_pb2.ModelPolicy(
        model_name=model,
        allowed_tenants=list(allowed_tenants),
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
    )
    if min_rollout_interval is not None:
        policy.min_rollout_interval.FromTimedelta(_dt.timedelta(seconds=min_rollout_interval))
    return registry_pb2.SetPolicyRequest(policy=policy, expected_revision=expected_revision)


def data_source(text: str, text_field: str = "") -> trainer_pb2.DataSource:
    """ "builtin:NAME" names a built-in corpus; anything else is a path or glob."""
    if text.startswith("builtin:"):
        return trainer_pb2.DataSource(builtin=text.removeprefix("builtin:"), text_field=text_field)
    return trainer_pb2.DataSource(path=text, text_field=text_field)


def dataset_spec(
    name: str,
    sources: Sequence[str],
    *,
    tokenizer: str | int = "bpe",
    vocab_size: int = 0,
    base_model: str = "",
    validation_fraction: float = 0.0,
    seed: int = 0,
    text_field: str = "",
    cleaning: trainer_pb2.CleaningOptions | Mapping[str, Any] | None = None,
) -> trainer_pb2.DatasetSpec:
    if isinstance(sources, str):
        sources = [sources]
    if isinstance(cleaning, Mapping):
        cleaning = json_format.ParseDict(dict(cleaning), trainer_pb2.CleaningOptions())
    return trainer_pb2.DatasetSpec(
        name=name,
        sources=[data_source(s, text_field) for s in sources],
        cleaning=cleaning,
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=_choice(_TOKENIZERS, tokenizer, "tokenizer"),
            vocab_size=vocab_size,
            base_model=base_model,
        ),
        validation_fraction=validation_fraction,
        seed=seed,
    )


def job_spec(spec: trainer_pb2.JobSpec | Mapping[str, Any]) -> trainer_pb2.JobSpec:
    """A JobSpec as given, or parsed from its JSON form (a dict)."""
    if isinstance(spec, trainer_pb2.JobSpec):
        return spec
    try:
        return json_format.ParseDict(dict(spec), trainer_pb2.JobSpec())
    except json_format.ParseError as exc:
        raise InvalidArgument("spec", str(exc)) from None


def submit_job(
    spec: trainer_pb2.JobSpec | Mapping[str, Any], request_id: str | None = None
) -> trainer_pb2.SubmitJobRequest:
    """Always carries an idempotency key, so a resubmission never makes a second job."""
    return trainer_pb2.SubmitJobRequest(
        spec=job_spec(spec), request_id=request_id or uuid.uuid4().hex
    )


def job_states(states: Iterable[str | int]) -> list[int]:
    """("running", "queued") or enum values, as JobState values."""
    values = []
    for state in states:
        if isinstance(state, int):
            values.append(state)
            continue
        try:
            values.append(trainer_pb2.JobState.Value(f"JOB_STATE_{state.upper()}"))
        except ValueError:
            raise InvalidArgument("states", f"unknown job state {state!r}") from None
    return values
