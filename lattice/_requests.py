"""Request messages built from plain Python arguments, shared by both clients.

The sync and async clients differ only in how they call; what they send is
built here once.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from google.protobuf import json_format

from lattice import artifacts as _artifacts
from lattice.errors import InvalidArgument
from lattice.v1 import common_pb2, inference_pb2, registry_pb2, trainer_pb2

_Enum = TypeVar("_Enum", bound=int)

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


def _choice(table: Mapping[str, _Enum], value: str | int, field: str) -> _Enum:
    """The enum value named `value`; an int passes through as that enum's value."""
    if isinstance(value, int):
        return cast(_Enum, value)
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(field, f"{value!r} is not one of {', '.join(table)}") from None


def model_task(value: str | int) -> common_pb2.ModelTask:
    return _choice(_TASKS, value, "task")


def task_name(value: int) -> str:
    return next((name for name, v in _TASKS.items() if v == value), "unspecified")


def artifact_format(value: str | int) -> common_pb2.ArtifactFormat:
    return _choice(_FORMATS, value, "format")


def format_name(value: int) -> str:
    return next((name for name, v in _FORMATS.items() if v == value), "unspecified")


def version_status(value: str | int) -> registry_pb2.VersionStatus:
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


def classify(
    model: str,
    inputs: Sequence[str] | str,
    top_k: int = 0,
    skip_cache: bool = False,
    routing_key: str = "",
) -> inference_pb2.ClassifyRequest:
    if isinstance(inputs, str):
        inputs = [inputs]
    if top_k < 0:
        raise InvalidArgument("top_k", "must be >= 0 (0 = every label)")
    return inference_pb2.ClassifyRequest(
        model=model,
        inputs=list(inputs),
        top_k=top_k,
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


#: Called as progress(bytes_done, bytes_total) while an artifact moves.
Progress = Callable[[int, int], None]


def upload_messages(
    data: bytes, progress: Progress | None = None
) -> Iterator[registry_pb2.UploadArtifactRequest]:
    """The header, then the bytes in chunks of at most 1 MiB; `progress` hears
    of each chunk as gRPC takes it."""
    header = registry_pb2.ArtifactHeader(
        digest=_artifacts.sha256_hex(data),
        size_bytes=len(data),
        content_type=_artifacts.CONTENT_TYPE,
    )
    yield registry_pb2.UploadArtifactRequest(header=header)
    sent = 0
    for chunk in _artifacts.iter_chunks(data):
        yield registry_pb2.UploadArtifactRequest(chunk=chunk)
        sent += len(chunk)
        if progress is not None:
            progress(sent, len(data))


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


def tenant_quota(
    requests: int = 0, tokens: int = 0, window: float | None = None
) -> registry_pb2.TenantQuota:
    """A quota per window (seconds; None = the gateway's window); 0 = unlimited."""
    if requests < 0 or tokens < 0:
        raise ValueError("quotas must be >= 0")
    quota = registry_pb2.TenantQuota(requests=requests, tokens=tokens)
    if window is not None:
        quota.window.FromTimedelta(_dt.timedelta(seconds=window))
    return quota


#: What dataset preparation reads; other files are not uploaded.
SOURCE_SUFFIXES = (".txt", ".jsonl", ".csv")
UPLOAD_CHUNK = 1024 * 1024


def source_files(local: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """(relative name, path) of every .txt/.jsonl/.csv file of a file or directory."""
    root = Path(local)
    if root.is_file():
        return [(root.name, root)]
    if not root.is_dir():
        raise ValueError(f"{local}: no such file or directory")
    found = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in SOURCE_SUFFIXES
    )
    if not found:
        raise ValueError(f"{local}: holds no {', '.join(SOURCE_SUFFIXES)} file")
    return found


def upload_directory_name(local: str | os.PathLike[str]) -> str:
    """The remote directory an upload of `local` goes to by default: its name, made safe."""
    name = Path(os.path.abspath(local)).name
    if Path(local).is_file():
        name = Path(name).stem
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-_")
    return safe or "upload"


def source_upload_messages(
    files: Sequence[tuple[str, Path]],
    directory: str,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[trainer_pb2.UploadSourcesRequest]:
    """The UploadSources stream: target, then each file's header and chunks."""
    yield trainer_pb2.UploadSourcesRequest(target=trainer_pb2.UploadTarget(directory=directory))
    for name, path in files:
        size = path.stat().st_size
        yield trainer_pb2.UploadSourcesRequest(
            file=trainer_pb2.SourceFileHeader(path=name, size_bytes=size)
        )
        with path.open("rb") as handle:
            while chunk := handle.read(UPLOAD_CHUNK):
                yield trainer_pb2.UploadSourcesRequest(chunk=chunk)
                if on_progress is not None:
                    on_progress(len(chunk))


def data_source(text: str, text_field: str = "", encoding: str = "") -> trainer_pb2.DataSource:
    """ "builtin:NAME" names a built-in corpus; anything else is a path or glob."""
    if text.startswith("builtin:"):
        return trainer_pb2.DataSource(builtin=text.removeprefix("builtin:"), text_field=text_field)
    return trainer_pb2.DataSource(path=text, text_field=text_field, encoding=encoding)


def _word_list_sources(
    paths: str | Sequence[str], role: trainer_pb2.DataSourceRole
) -> list[trainer_pb2.DataSource]:
    paths = [paths] if isinstance(paths, str) else list(paths)
    return [trainer_pb2.DataSource(path=path, role=role) for path in paths if path]


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
    encoding: str = "",
    user_dictionary: str | Sequence[str] = (),
    stop_words_file: str | Sequence[str] = (),
    cleaning: trainer_pb2.CleaningOptions | Mapping[str, Any] | None = None,
) -> trainer_pb2.DatasetSpec:
    """`encoding` is declared for every path source (empty: detect per file);
    `user_dictionary` and `stop_words_file` are paths (as the trainer sees them)
    of a jieba user dictionary and of extra stop words, one a line."""
    if isinstance(sources, str):
        sources = [sources]
    if isinstance(cleaning, Mapping):
        cleaning = json_format.ParseDict(dict(cleaning), trainer_pb2.CleaningOptions())
    return trainer_pb2.DatasetSpec(
        name=name,
        sources=[
            *(data_source(s, text_field, encoding) for s in sources),
            *_word_list_sources(user_dictionary, trainer_pb2.DATA_SOURCE_ROLE_USER_DICTIONARY),
            *_word_list_sources(stop_words_file, trainer_pb2.DATA_SOURCE_ROLE_STOP_WORDS),
        ],
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


def job_states(states: Iterable[str | int]) -> list[trainer_pb2.JobState]:
    """("running", "queued") or enum values, as JobState values."""
    values: list[trainer_pb2.JobState] = []
    for state in states:
        if isinstance(state, int):
            values.append(cast(trainer_pb2.JobState, state))
            continue
        try:
            values.append(
                cast(trainer_pb2.JobState, trainer_pb2.JobState.Value(f"JOB_STATE_{state.upper()}"))
            )
        except ValueError:
            raise InvalidArgument("states", f"unknown job state {state!r}") from None
    return values
