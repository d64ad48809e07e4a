"""The synchronous client: one channel, every public Lattice RPC."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from lattice import _requests
from lattice import artifacts as _artifacts
from lattice._connection import Connection, PathOrBytes
from lattice._streams import Stream
from lattice._types import (
    Classifications,
    Embeddings,
    Generation,
    GenerationDelta,
    SimilarWords,
)
from lattice.errors import InvalidArgument, Unavailable, from_rpc_error
from lattice.v1 import (
    inference_pb2,
    registry_pb2,
    trainer_pb2,
)

_TERMINAL_JOB_STATES = frozenset(
    {
        trainer_pb2.JOB_STATE_SUCCEEDED,
        trainer_pb2.JOB_STATE_FAILED,
        trainer_pb2.JOB_STATE_CANCELLED,
        trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE,
    }
)


class Client(Connection):
    """Talks to the Lattice gateway (or any one service) over gRPC.

    `target` defaults to $LATTICE_TARGET, then 127.0.0.1:50051 (the gateway);
    `token` to $LATTICE_TOKEN, sent as `authorization: Bearer <token>`. TLS is
    on when `tls=True` or a root/client certificate is given (PEM bytes or a
    path; or $LATTICE_TLS_ROOT_CERT, $LATTICE_TLS_CLIENT_CERT/KEY). Failed calls
    raise `lattice.LatticeError` subclasses. `timeout` replaces every default
    deadline; `metadata` pairs go with every call (e.g. a W3C `traceparent`);
    `retries` is the most attempts for idempotent calls on UNAVAILABLE (1 = off).
    Use as a context manager or call `close()`.
    """

    channel_api = grpc

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------

    def _unary(self, method: Any, request: Any, kind: str, timeout: float | None) -> Any:
        try:
            return method(
                request,
                timeout=self._config.timeout(kind, timeout),
                metadata=self._config.metadata(),
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def _stream(
        self, method: Any, request: Any, kind: str, timeout: float | None, convert: Any
    ) -> Stream[Any]:
        call = method(
            request, timeout=self._config.timeout(kind, timeout), metadata=self._config.metadata()
        )
        return Stream(call, convert)

    def _pages(self, method: Any, request: Any, field: str, timeout: float | None) -> list[Any]:
        items: list[Any] = []
        while True:
            response = self._unary(method, request, "unary", timeout)
            items.extend(getattr(response, field))
            if not response.next_page_token:
                return items
            request.page_token = response.next_page_token

    # -- inference ----------------------------------------------------------

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        skip_cache: bool = False,
        routing_key: str = "",
        timeout: float | None = None,
    ) -> Generation:
        """Generate a completion for `prompt` with `model` ("name", "name@alias", "name:N")."""
        request = _requests.generate(
            model,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            skip_cache=skip_cache,
            routing_key=routing_key,
        )
        response = self._unary(self._inference.Generate, request, "generate", timeout)
        return Generation.from_proto(response)

    def stream(
        self,
        model: str,
        prompt: str,
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        skip_cache: bool = False,
        routing_key: str = "",
        timeout: float | None = None,
    ) -> Stream[GenerationDelta]:
        """Stream a completion as text deltas; breaking out of the loop cancels generation."""
        request = _requests.generate_stream(
            model,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop=stop,
            seed=seed,
            skip_cache=skip_cache,
            routing_key=routing_key,
        )
        return self._stream(
            self._inference.GenerateStream, request, "stream", timeout, GenerationDelta.from_proto
        )

    def embed(
        self,
        model: str,
        inputs: Sequence[str] | str,
        *,
        normalize: bool = False,
        skip_cache: bool = False,
        routing_key: str = "",
        timeout: float | None = None,
    ) -> Embeddings:
        """Embed texts with an encoder model; one vector per input."""
        request = _requests.embed(model, inputs, normalize, skip_cache, routing_key)
        return Embeddings.from_proto(
            self._unary(self._inference.Embed, request, "generate", timeout)
        )

    def classify(
        self,
        model: str,
        inputs: Sequence[str] | str,
        *,
        top_k: int = 0,
        skip_cache: bool = False,
        routing_key: str = "",
        timeout: float | None = None,
    ) -> Classifications:
        """Classify texts with a classification model (a SEQUENCE_CLASSIFICATION
        version): per input, its labels with probabilities, highest first; `top_k`
        of them (0 = all)."""
        request = _requests.classify(model, inputs, top_k, skip_cache, routing_key)
        return Classifications.from_proto(
            self._unary(self._inference.Classify, request, "generate", timeout)
        )

    def similar_words(
        self,
        model: str,
        query: str | Sequence[float],
        *,
        top_k: int = 10,
        routing_key: str = "",
        timeout: float | None = None,
    ) -> SimilarWords:
        """The top_k words nearest (cosine) to a word or a vector, in a word-embedding
        model (WORD2VEC or GLOVE)."""
        request = _requests.similar_words(model, query, top_k, routing_key)
        return SimilarWords.from_proto(
            self._unary(self._inference.SimilarWords, request, "generate", timeout)
        )

    def loaded_models(
        self, *, timeout: float | None = None
    ) -> inference_pb2.ListLoadedModelsResponse:
        """Admin: what an inference replica has loaded (call it on the replica)."""
        request = inference_pb2.ListLoadedModelsRequest()
        return self._unary(self._inference.ListLoadedModels, request, "unary", timeout)

    # -- registry: models and versions ---------------------------------------

    def create_model(
        self,
        name: str,
        task: str | int = "text-generation",
        *,
        description: str = "",
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> registry_pb2.Model:
        """Create a model; task is "text-generation", "embedding" or "classification"."""
        request = _requests.create_model(name, task, description, labels)
        return self._unary(self._registry.CreateModel, request, "unary", timeout).model

    def get_model(self, name: str, *, timeout: float | None = None) -> registry_pb2.Model:
        request = registry_pb2.GetModelRequest(name=name)
        return self._unary(self._registry.GetModel, request, "unary", timeout).model

    def list_models(self, *, timeout: float | None = None) -> list[registry_pb2.Model]:
        """Every model, in name order (all pages)."""
        request = registry_pb2.ListModelsRequest(page_size=1000)
        return self._pages(self._registry.ListModels, request, "models", timeout)

    def delete_model(self, name: str, *, timeout: float | None = None) -> None:
        request = registry_pb2.DeleteModelRequest(name=name)
        self._unary(self._registry.DeleteModel, request, "unary", timeout)

    def create_version(
        self,
        model: str,
        *,
        artifact_uri: str,
        artifact_digest: str,
        format: str | int = "transformers",
        timeout: float | None = None,
        **fields: Any,
    ) -> registry_pb2.ModelVersion:
        """Register a version of an artifact already stored (see `register_version`).

        `fields`: training_job_id, dataset_digest, base_version, metrics, params,
        tags, description.
        """
        request = _requests.create_version(model, artifact_uri, artifact_digest, format, **fields)
        return self._unary(self._registry.CreateVersion, request, "unary", timeout).version

    def register_version(
        self,
        model: str,
        artifact: PathOrBytes,
        *,
        format: str | int = "transformers",
        timeout: float | None = None,
        progress: _requests.Progress | None = None,
        **fields: Any,
    ) -> registry_pb2.ModelVersion:
        """Upload a model directory (or tar bytes) and register it as the next version;
        `progress(bytes_sent, bytes_total)` follows the upload."""
        uploaded = self.upload_artifact(artifact, timeout=timeout, progress=progress)
        return self.create_version(
            model,
            artifact_uri=uploaded.artifact_uri,
            artifact_digest=uploaded.digest,
            format=format,
            timeout=timeout,
            **fields,
        )

    def get_version(
        self, model: str, version: int, *, timeout: float | None = None
    ) -> registry_pb2.ModelVersion:
        request = registry_pb2.GetVersionRequest(model_name=model, version=version)
        return self._unary(self._registry.GetVersion, request, "unary", timeout).version

    def list_versions(
        self, model: str, *, timeout: float | None = None
    ) -> list[registry_pb2.ModelVersion]:
        """A model's versions, newest first (all pages)."""
        request = registry_pb2.ListVersionsRequest(model_name=model, page_size=1000)
        return self._pages(self._registry.ListVersions, request, "versions", timeout)

    def set_version_status(
        self, model: str, version: int, status: str | int, *, timeout: float | None = None
    ) -> registry_pb2.ModelVersion:
        """Archive a version ("archived") or make it usable again ("ready")."""
        request = registry_pb2.UpdateVersionStatusRequest(
            model_name=model, version=version, status=_requests.version_status(status)
        )
        return (self._unary(self._registry.UpdateVersionStatus, request, "unary", timeout)).version

    # -- registry: artifacts --------------------------------------------------

    def upload_artifact(
        self,
        artifact: PathOrBytes,
        *,
        timeout: float | None = None,
        progress: _requests.Progress | None = None,
    ) -> registry_pb2.UploadArtifactResponse:
        """Upload a directory (packed as a deterministic tar) or tar bytes;
        `progress(bytes_sent, bytes_total)` is called per chunk."""
        data = _requests.artifact_bytes(artifact)
        try:
            return self._registry.UploadArtifact(
                _requests.upload_messages(data, progress),
                timeout=self._config.timeout("transfer", timeout),
                metadata=self._config.metadata(),
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def download_artifact(
        self,
        digest: str,
        directory: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = None,
        progress: _requests.Progress | None = None,
    ) -> bytes:
        """Download an artifact (by digest or URI), check its sha256, and unpack it
        into `directory` when one is given. Returns the bytes.
        `progress(bytes_received, bytes_total)` is called per chunk."""
        request = registry_pb2.DownloadArtifactRequest(digest=digest)
        stream = self._stream(
            self._registry.DownloadArtifact, request, "transfer", timeout, lambda m: m
        )
        with stream:
            data = _collect_artifact(stream, progress)
        if directory is not None:
            _artifacts.unpack_to(data, Path(directory))
        return data

    # -- registry: aliases, deployments, policy ------------------------------

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        expected_revision: int = 0,
        timeout: float | None = None,
    ) -> registry_pb2.Alias:
        request = registry_pb2.SetAliasRequest(
            model_name=model, alias=alias, version=version, expected_revision=expected_revision
        )
        return self._unary(self._registry.SetAlias, request, "unary", timeout).alias

    def delete_alias(
        self, model: str, alias: str, *, expected_revision: int = 0, timeout: float | None = None
    ) -> None:
        request = registry_pb2.DeleteAliasRequest(
            model_name=model, alias=alias, expected_revision=expected_revision
        )
        self._unary(self._registry.DeleteAlias, request, "unary", timeout)

    def list_aliases(self, model: str, *, timeout: float | None = None) -> list[registry_pb2.Alias]:
        request = registry_pb2.ListAliasesRequest(model_name=model)
        return list(self._unary(self._registry.ListAliases, request, "unary", timeout).aliases)

    def resolve(
        self, model: str, *, timeout: float | None = None
    ) -> registry_pb2.ResolveModelResponse:
        """What "name", "name@alias" or "name:N" resolves to (version, deployment, policy)."""
        request = registry_pb2.ResolveModelRequest(model=model)
        return self._unary(self._registry.ResolveModel, request, "unary", timeout)

    def get_deployment(
        self, model: str, *, timeout: float | None = None
    ) -> registry_pb2.Deployment:
        request = registry_pb2.GetDeploymentRequest(model_name=model)
        return self._unary(self._registry.GetDeployment, request, "unary", timeout).deployment

    def list_deployments(self, *, timeout: float | None = None) -> list[registry_pb2.Deployment]:
        request = registry_pb2.ListDeploymentsRequest(page_size=1000)
        return self._pages(self._registry.ListDeployments, request, "deployments", timeout)

    def deploy(
        self,
        model: str,
        routes: Mapping[int, int],
        *,
        shadow: int = 0,
        reason: str = "",
        expected_revision: int = 0,
        timeout: float | None = None,
    ) -> registry_pb2.Deployment:
        """Replace the deployment: `routes` is {version: weight} (weights sum to 100).

        `{1: 90, 2: 10}` is a canary, `{1: 100}` a rollback, `{}` takes it offline.
        """
        request = _requests.update_deployment(model, routes, shadow, reason, expected_revision)
        return self._unary(self._registry.UpdateDeployment, request, "unary", timeout).deployment

    def history(
        self, model: str = "", *, timeout: float | None = None
    ) -> list[registry_pb2.DeploymentHistoryEntry]:
        """Deployment changes, newest first; every model's when `model` is empty."""
        request = registry_pb2.ListDeploymentHistoryRequest(model_name=model, page_size=1000)
        return self._pages(self._registry.ListDeploymentHistory, request, "entries", timeout)

    def get_policy(self, model: str, *, timeout: float | None = None) -> registry_pb2.ModelPolicy:
        request = registry_pb2.GetPolicyRequest(model_name=model)
        return self._unary(self._registry.GetPolicy, request, "unary", timeout).policy

    def set_policy(
        self,
        model: str,
        *,
        allowed_tenants: Iterable[str] = (),
        max_new_tokens: int = 0,
        max_prompt_tokens: int = 0,
        min_rollout_interval: float | None = None,
        expected_revision: int = 0,
        timeout: float | None = None,
    ) -> registry_pb2.ModelPolicy:
        """Replace a model's policy (min_rollout_interval in seconds)."""
        request = _requests.set_policy(
            model,
            allowed_tenants=allowed_tenants,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            min_rollout_interval=min_rollout_interval,
            expected_revision=expected_revision,
        )
        return self._unary(self._registry.SetPolicy, request, "unary", timeout).policy

    # --- tenants (admin) --------------------------------------------------------------

    def create_tenant(
        self,
        name: str,
        *,
        enabled: bool = True,
        quota: registry_pb2.TenantQuota | None = None,
        timeout: float | None = None,
    ) -> registry_pb2.Tenant:
        """Create a tenant record (admin only); `quota` is a `registry_pb2.TenantQuota`."""
        tenant = registry_pb2.Tenant(name=name, enabled=enabled, quota=quota)
        request = registry_pb2.CreateTenantRequest(tenant=tenant)
        return self._unary(self._registry.CreateTenant, request, "unary", timeout).tenant

    def get_tenant(self, name: str, *, timeout: float | None = None) -> registry_pb2.Tenant:
        request = registry_pb2.GetTenantRequest(name=name)
        return self._unary(self._registry.GetTenant, request, "unary", timeout).tenant

    def list_tenants(self, *, timeout: float | None = None) -> list[registry_pb2.Tenant]:
        """Tenant records in name order (only the caller's own unless admin)."""
        request = registry_pb2.ListTenantsRequest(page_size=1000)
        return self._pages(self._registry.ListTenants, request, "tenants", timeout)

    def update_tenant(
        self,
        tenant: registry_pb2.Tenant,
        *,
        expected_revision: int = 0,
        timeout: float | None = None,
    ) -> registry_pb2.Tenant:
        """Replace a tenant record (admin only): read it, change it, write it back."""
        request = registry_pb2.UpdateTenantRequest(
            tenant=tenant, expected_revision=expected_revision
        )
        return self._unary(self._registry.UpdateTenant, request, "unary", timeout).tenant

    def watch(
        self,
        from_revision: int = 0,
        model_names: Sequence[str] = (),
        *,
        timeout: float | None = None,
    ) -> Stream[registry_pb2.WatchResponse]:
        """Registry changes after `from_revision` (0: a snapshot first), then live ones."""
        request = registry_pb2.WatchRequest(
            from_revision=from_revision, model_names=list(model_names)
        )
        return self._stream(self._registry.Watch, request, "watch", timeout, lambda m: m)

    # -- trainer -------------------------------------------------------------

    def prepare_dataset(
        self,
        name: str = "",
        sources: Sequence[str] = (),
        *,
        spec: trainer_pb2.DatasetSpec | None = None,
        timeout: float | None = None,
        **options: Any,
    ) -> trainer_pb2.Dataset:
        """Clean, split and tokenise text into a dataset.

        `sources`: paths/globs, or "builtin:python-docstrings". `options`:
        tokenizer ("bpe"/"wordpiece"), vocab_size, validation_fraction, seed,
        text_field, encoding, user_dictionary, stop_words_file (paths), cleaning
        (CleaningOptions or its dict: language, script_conversion, segment_words,
        remove_stop_words, near_deduplicate, ...). Or pass a full `spec`.
        """
        if spec is None:
            spec = _requests.dataset_spec(name, sources, **options)
        request = trainer_pb2.PrepareDatasetRequest(spec=spec)
        return self._unary(self._trainer.PrepareDataset, request, "prepare", timeout).dataset

    def upload_sources(
        self,
        local: str | os.PathLike[str],
        directory: str | None = None,
        *,
        on_progress: Callable[[int], None] | None = None,
        timeout: float | None = None,
    ) -> trainer_pb2.UploadSourcesResponse:
        """Upload a local file or directory's .txt/.jsonl/.csv files into your source
        directory on the trainer (replacing `directory` there, default: the local name).
        Use the returned `directory` as a `prepare_dataset` source. `on_progress` gets
        the bytes of each chunk sent."""
        files = _requests.source_files(local)
        name = directory or _requests.upload_directory_name(local)
        try:
            return self._trainer.UploadSources(
                _requests.source_upload_messages(files, name, on_progress),
                timeout=self._config.timeout("transfer", timeout),
                metadata=self._config.metadata(),
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    def get_dataset(self, dataset_id: str, *, timeout: float | None = None) -> trainer_pb2.Dataset:
        request = trainer_pb2.GetDatasetRequest(dataset_id=dataset_id)
        return self._unary(self._trainer.GetDataset, request, "unary", timeout).dataset

    def list_datasets(self, *, timeout: float | None = None) -> list[trainer_pb2.Dataset]:
        request = trainer_pb2.ListDatasetsRequest(page_size=1000)
        return self._pages(self._trainer.ListDatasets, request, "datasets", timeout)

    def submit_job(
        self,
        spec: trainer_pb2.JobSpec | Mapping[str, Any],
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> trainer_pb2.Job:
        """Queue a training job (a JobSpec or its JSON dict form)."""
        request = _requests.submit_job(spec, request_id)
        return self._unary(self._trainer.SubmitJob, request, "unary", timeout).job

    def get_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.Job:
        request = trainer_pb2.GetJobRequest(job_id=job_id)
        return self._unary(self._trainer.GetJob, request, "unary", timeout).job

    def list_jobs(
        self, states: Iterable[str | int] = (), *, timeout: float | None = None
    ) -> list[trainer_pb2.Job]:
        """Jobs, newest first; `states` like ("running", "queued") filters."""
        request = trainer_pb2.ListJobsRequest(page_size=1000, states=_requests.job_states(states))
        return self._pages(self._trainer.ListJobs, request, "jobs", timeout)

    def cancel_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.Job:
        request = trainer_pb2.CancelJobRequest(job_id=job_id)
        return self._unary(self._trainer.CancelJob, request, "unary", timeout).job

    def watch_job(
        self, job_id: str, from_sequence: int = 0, *, timeout: float | None = None
    ) -> Stream[trainer_pb2.WatchJobResponse]:
        """A job's events (state, metrics, alerts, log lines) until it finishes."""
        request = trainer_pb2.WatchJobRequest(job_id=job_id, from_sequence=from_sequence)
        return self._stream(self._trainer.WatchJob, request, "watch", timeout, lambda m: m)

    def follow_job(
        self, job_id: str, from_sequence: int = 0, *, reconnect_for: float = 60.0
    ) -> Iterator[trainer_pb2.WatchJobResponse]:
        """`watch_job` that survives a trainer (or gateway) restart: when the stream
        breaks with UNAVAILABLE it reconnects, with backoff, and resumes after the
        last event seen, so no event is lost or repeated. Gives up after
        `reconnect_for` seconds without getting through."""
        last = from_sequence
        failing_since: float | None = None
        delay = 0.1
        while True:
            try:
                with self.watch_job(job_id, last) as events:
                    for event in events:
                        failing_since, delay = None, 0.1
                        last = max(last, event.sequence)
                        yield event
                return
            except Unavailable:
                now = time.monotonic()
                failing_since = failing_since if failing_since is not None else now
                if now - failing_since > reconnect_for:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def wait_job(self, job_id: str, *, timeout: float | None = None) -> trainer_pb2.Job:
        """Block until the job finishes; returns its final state."""
        with self.watch_job(job_id, timeout=timeout) as events:
            for event in events:
                if event.HasField("job") and event.job.state in _TERMINAL_JOB_STATES:
                    return event.job
        return self.get_job(job_id)


def is_terminal(job: trainer_pb2.Job) -> bool:
    return job.state in _TERMINAL_JOB_STATES


def _collect_artifact(
    messages: Iterable[registry_pb2.DownloadArtifactResponse],
    progress: _requests.Progress | None = None,
) -> bytes:
    """Join the chunks after the info message and check size and digest."""
    info: registry_pb2.ArtifactInfo | None = None
    parts: list[bytes] = []
    received = 0
    for message in messages:
        if message.HasField("info"):
            info = message.info
        else:
            parts.append(message.chunk)
            received += len(message.chunk)
            if progress is not None:
                progress(received, info.size_bytes if info else 0)
    return check_artifact(info, b"".join(parts))


def check_artifact(info: registry_pb2.ArtifactInfo | None, data: bytes) -> bytes:
    if info is None:
        raise InvalidArgument("digest", "the download carried no artifact info")
    if len(data) != info.size_bytes or _artifacts.sha256_hex(data) != info.digest:
        raise InvalidArgument("digest", f"downloaded bytes do not match {info.digest}")
    return data
