"""Small real lattice.v1 servicers for SDK and CLI tests, served by the shared runtime.

They speak the real contract over real gRPC (LatticeServer on port 0, with
its error mapping), with just enough behaviour to exercise every client
method: an in-memory registry, a trainer whose jobs emit scripted events,
and an inference service that generates words one at a time and records
whether a stream was cancelled. The service suites test the real services;
these stand in where a client needs a predictable peer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import grpc
from google.protobuf import timestamp_pb2

from lattice import artifacts as _artifacts
from lattice.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from lattice.v1 import (
    common_pb2,
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.runtime import LatticeServer, ServerSettings, Service

TEST_TOKEN = "test-token"


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def check_token(context: grpc.aio.ServicerContext, token: str | None) -> None:
    if token is None:
        return
    metadata = dict(context.invocation_metadata() or ())
    if metadata.get("authorization") != f"Bearer {token}":
        raise Unauthenticated("missing or invalid bearer token")


class WordInference(inference_pb2_grpc.InferenceServiceServicer):
    """Generates "w0 w1 w2 ..." one word per `delay` seconds; counts what it produced."""

    def __init__(self, token: str | None = None, delay: float = 0.0) -> None:
        self.token = token
        self.delay = delay
        self.produced = 0
        self.last_metadata: dict[str, str] = {}
        # threading.Events: tests check them from another thread than the server's.
        self.stream_cancelled = threading.Event()
        self.stream_finished = threading.Event()

    def _check(self, model: str, context) -> None:
        check_token(context, self.token)
        if not model:
            raise InvalidArgument("model", "required")
        if model.startswith("missing"):
            raise NotFound(f"model {model!r} not found")
        if model.startswith("limited"):
            raise ResourceExhausted(
                "token quota exhausted", retry_after=7.0, subject="tenant:test", quota="tokens"
            )

    async def Generate(self, request, context):
        self._check(request.model, context)
        self.last_metadata = dict(context.invocation_metadata() or ())
        count = request.parameters.max_new_tokens or 8
        words = [f"w{i}" for i in range(count)]
        return inference_pb2.GenerateResponse(
            text=" ".join(words),
            model_name=request.model.split(":")[0].split("@")[0],
            model_version=1,
            finish_reason=inference_pb2.FINISH_REASON_LENGTH,
            usage=common_pb2.Usage(
                prompt_tokens=len(request.prompt.split()),
                completion_tokens=count,
                total_tokens=len(request.prompt.split()) + count,
            ),
            cached=request.prompt.startswith("cached"),
        )

    async def GenerateStream(self, request, context):
        self._check(request.model, context)
        count = request.parameters.max_new_tokens or 8
        self.produced = 0
        self.stream_cancelled.clear()
        self.stream_finished.clear()
        try:
            for index in range(count):
                await asyncio.sleep(self.delay)
                self.produced += 1
                message = inference_pb2.GenerateStreamResponse(
                    delta=("" if index == 0 else " ") + f"w{index}", index=index
                )
                if index == 0:
                    message.model_name = request.model
                    message.model_version = 1
                yield message
            yield inference_pb2.GenerateStreamResponse(
                index=count,
                finish_reason=inference_pb2.FINISH_REASON_LENGTH,
                usage=common_pb2.Usage(completion_tokens=count, total_tokens=count),
            )
            self.stream_finished.set()
        except asyncio.CancelledError:
            self.stream_cancelled.set()
            raise

    async def Embed(self, request, context):
        self._check(request.model, context)
        if not request.inputs:
            raise InvalidArgument("inputs", "at least one input is required")
        return inference_pb2.EmbedResponse(
            embeddings=[
                inference_pb2.Embedding(values=[float(len(text)), 1.0, 0.0])
                for text in request.inputs
            ],
            model_name=request.model,
            model_version=1,
            usage=common_pb2.Usage(prompt_tokens=len(request.inputs)),
        )

    async def ListLoadedModels(self, request, context):
        check_token(context, self.token)
        return inference_pb2.ListLoadedModelsResponse(
            models=[
                inference_pb2.LoadedModel(
                    model_name="tiny", version=1, state=inference_pb2.LOADED_MODEL_STATE_READY
                )
            ],
            registry_revision=3,
        )


class MemoryRegistry(registry_pb2_grpc.ModelRegistryServiceServicer):
    """The registry contract over dicts, with revisions and a live Watch."""

    def __init__(self) -> None:
        self.revision = 0
        self.models: dict[str, registry_pb2.Model] = {}
        self.versions: dict[tuple[str, int], registry_pb2.ModelVersion] = {}
        self.artifacts: dict[str, bytes] = {}
        self.aliases: dict[tuple[str, str], registry_pb2.Alias] = {}
        self.deployments: dict[str, registry_pb2.Deployment] = {}
        self.policies: dict[str, registry_pb2.ModelPolicy] = {}
        self.history: list[registry_pb2.DeploymentHistoryEntry] = []
        self.watchers: list[asyncio.Queue] = []

    def _bump(self, **event) -> int:
        self.revision += 1
        message = registry_pb2.WatchResponse(
            type=registry_pb2.WATCH_EVENT_TYPE_PUT, revision=self.revision, **event
        )
        for queue in self.watchers:
            queue.put_nowait(message)
        return self.revision

    def _model(self, name: str) -> registry_pb2.Model:
        if name not in self.models:
            raise NotFound(f"model {name!r} not found")
        return self.models[name]

    async def CreateModel(self, request, context):
        model = request.model
        if not model.name:
            raise InvalidArgument("model.name", "required")
        if model.name in self.models:
            raise AlreadyExists(f"model {model.name!r} already exists")
        stored = registry_pb2.Model()
        stored.CopyFrom(model)
        stored.create_time.CopyFrom(_now())
        self.models[model.name] = stored
        self._bump(model=stored)
        return registry_pb2.CreateModelResponse(model=stored)

    async def GetModel(self, request, context):
        return registry_pb2.GetModelResponse(model=self._model(request.name))

    async def ListModels(self, request, context):
        names = sorted(self.models)
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = names[start : start + size]
        token = str(start + size) if start + size < len(names) else ""
        return registry_pb2.ListModelsResponse(
            models=[self.models[n] for n in page], next_page_token=token
        )

    async def DeleteModel(self, request, context):
        self._model(request.name)
        if self.deployments.get(request.name, registry_pb2.Deployment()).routes:
            raise FailedPrecondition(f"model {request.name!r} is online")
        del self.models[request.name]
        return registry_pb2.DeleteModelResponse()

    async def CreateVersion(self, request, context):
        model = self._model(request.model_name)
        digest = request.artifact_digest
        if request.artifact_uri.startswith("lattice-artifact://") and digest not in self.artifacts:
            raise FailedPrecondition(f"artifact {digest} is not stored")
        model.latest_version += 1
        version = registry_pb2.ModelVersion(
            model_name=model.name,
            version=model.latest_version,
            artifact_uri=request.artifact_uri,
            artifact_digest=digest,
            format=request.format,
            lineage=request.lineage,
            metrics=request.metrics,
            params=request.params,
            tags=request.tags,
            description=request.description,
            status=registry_pb2.VERSION_STATUS_READY,
            artifact_size_bytes=len(self.artifacts.get(digest, b"")),
        )
        version.create_time.CopyFrom(_now())
        self.versions[(model.name, version.version)] = version
        self._bump(version=version)
        return registry_pb2.CreateVersionResponse(version=version)

    def _version(self, name: str, number: int) -> registry_pb2.ModelVersion:
        self._model(name)
        if (name, number) not in self.versions:
            raise NotFound(f"version {name}:{number} not found")
        return self.versions[(name, number)]

    async def GetVersion(self, request, context):
        return registry_pb2.GetVersionResponse(
            version=self._version(request.model_name, request.version)
        )

    async def ListVersions(self, request, context):
        self._model(request.model_name)
        found = [v for (n, _), v in self.versions.items() if n == request.model_name]
        found.sort(key=lambda v: -v.version)
        return registry_pb2.ListVersionsResponse(versions=found)

    async def UploadArtifact(self, request_iterator, context):
        header = None
        parts = []
        async for message in request_iterator:
            if message.HasField("header"):
                header = message.header
            else:
                parts.append(message.chunk)
        data = b"".join(parts)
        if header is None or _artifacts.sha256_hex(data) != header.digest:
            raise InvalidArgument("header.digest", "does not match the uploaded bytes")
        created = header.digest not in self.artifacts
        self.artifacts[header.digest] = data
        return registry_pb2.UploadArtifactResponse(
            artifact_uri=f"lattice-artifact://sha256/{header.digest}",
            digest=header.digest,
            size_bytes=len(data),
            created=created,
        )

    async def DownloadArtifact(self, request, context):
        digest = request.digest.removeprefix("lattice-artifact://sha256/")
        if digest not in self.artifacts:
            raise NotFound(f"artifact {digest} not found")
        data = self.artifacts[digest]
        yield registry_pb2.DownloadArtifactResponse(
            info=registry_pb2.ArtifactInfo(digest=digest, size_bytes=len(data))
        )
        for chunk in _artifacts.iter_chunks(data, 1000):
            yield registry_pb2.DownloadArtifactResponse(chunk=chunk)

    async def SetAlias(self, request, context):
        self._version(request.model_name, request.version)
        alias = registry_pb2.Alias(
            model_name=request.model_name, alias=request.alias, version=request.version
        )
        alias.revision = self._bump(alias=alias)
        self.aliases[(request.model_name, request.alias)] = alias
        return registry_pb2.SetAliasResponse(alias=alias)

    async def DeleteAlias(self, request, context):
        if self.aliases.pop((request.model_name, request.alias), None) is None:
            raise NotFound(f"alias {request.model_name}@{request.alias} not found")
        return registry_pb2.DeleteAliasResponse()

    async def ListAliases(self, request, context):
        return registry_pb2.ListAliasesResponse(
            aliases=[a for (n, _), a in sorted(self.aliases.items()) if n == request.model_name]
        )

    async def ResolveModel(self, request, context):
        name, _, number = request.model.partition(":")
        response = registry_pb2.ResolveModelResponse(
            model_name=name,
            deployment=self.deployments.get(name, registry_pb2.Deployment(model_name=name)),
            policy=self.policies.get(name, registry_pb2.ModelPolicy(model_name=name)),
        )
        self._model(name)
        if number:
            response.version.CopyFrom(self._version(name, int(number)))
        return response

    async def GetDeployment(self, request, context):
        self._model(request.model_name)
        return registry_pb2.GetDeploymentResponse(
            deployment=self.deployments.get(
                request.model_name, registry_pb2.Deployment(model_name=request.model_name)
            )
        )

    async def ListDeployments(self, request, context):
        return registry_pb2.ListDeploymentsResponse(
            deployments=[self.deployments[n] for n in sorted(self.deployments)]
        )

    async def UpdateDeployment(self, request, context):
        self._model(request.model_name)
        total = sum(r.weight for r in request.routes)
        if request.routes and total != 100:
            raise InvalidArgument("routes", f"weights sum to {total}, not 100")
        for route in request.routes:
            self._version(request.model_name, route.version)
        before = self.deployments.get(
            request.model_name, registry_pb2.Deployment(model_name=request.model_name)
        )
        after = registry_pb2.Deployment(
            model_name=request.model_name,
            routes=request.routes,
            shadow_version=request.shadow_version,
            updated_by="test",
        )
        after.update_time.CopyFrom(_now())
        after.revision = self._bump(deployment=after)
        self.deployments[request.model_name] = after
        self.history.insert(
            0,
            registry_pb2.DeploymentHistoryEntry(
                revision=after.revision,
                model_name=request.model_name,
                from_deployment=before,
                to_deployment=after,
                actor="test",
                reason=request.reason,
                time=after.update_time,
            ),
        )
        return registry_pb2.UpdateDeploymentResponse(deployment=after)

    async def ListDeploymentHistory(self, request, context):
        return registry_pb2.ListDeploymentHistoryResponse(
            entries=[
                e
                for e in self.history
                if not request.model_name or e.model_name == request.model_name
            ]
        )

    async def GetPolicy(self, request, context):
        self._model(request.model_name)
        return registry_pb2.GetPolicyResponse(
            policy=self.policies.get(
                request.model_name, registry_pb2.ModelPolicy(model_name=request.model_name)
            )
        )

    async def SetPolicy(self, request, context):
        self._model(request.policy.model_name)
        policy = registry_pb2.ModelPolicy()
        policy.CopyFrom(request.policy)
        policy.revision = self._bump(policy=policy)
        self.policies[policy.model_name] = policy
        return registry_pb2.SetPolicyResponse(policy=policy)

    async def Watch(self, request, context):
        queue: asyncio.Queue = asyncio.Queue()
        self.watchers.append(queue)
        try:
            for model in self.models.values():
                yield registry_pb2.WatchResponse(
                    type=registry_pb2.WATCH_EVENT_TYPE_PUT, revision=self.revision, model=model
                )
            yield registry_pb2.WatchResponse(
                type=registry_pb2.WATCH_EVENT_TYPE_SYNCED, revision=self.revision
            )
            while True:
                yield await queue.get()
        finally:
            self.watchers.remove(queue)


class ScriptedTrainer(trainer_pb2_grpc.TrainerServiceServicer):
    """Datasets in memory; a job runs `steps` metric events, one alert, then succeeds."""

    def __init__(self, steps: int = 5, step_delay: float = 0.02) -> None:
        self.steps = steps
        self.step_delay = step_delay
        self.datasets: dict[str, trainer_pb2.Dataset] = {}
        self.jobs: dict[str, trainer_pb2.Job] = {}
        self.events: dict[str, list[trainer_pb2.WatchJobResponse]] = {}
        self.changed: dict[str, asyncio.Condition] = {}
        self.tasks: dict[str, asyncio.Task] = {}

    async def PrepareDataset(self, request, context):
        spec = request.spec
        if not spec.name:
            raise InvalidArgument("spec.name", "required")
        if not spec.sources:
            raise InvalidArgument("spec.sources", "at least one source is required")
        dataset = trainer_pb2.Dataset(
            id=f"{spec.name}-0123456789ab",
            name=spec.name,
            digest="0123456789ab" + "0" * 52,
            spec=spec,
            report=trainer_pb2.DatasetReport(
                documents_in=10,
                documents_out=8,
                dropped={"duplicate": 2},
                train_documents=7,
                validation_documents=1,
                train_tokens=700,
                validation_tokens=100,
                vocab_size=spec.tokenizer.vocab_size or 8000,
            ),
        )
        dataset.create_time.CopyFrom(_now())
        self.datasets[dataset.id] = dataset
        return trainer_pb2.PrepareDatasetResponse(dataset=dataset)

    async def GetDataset(self, request, context):
        if request.dataset_id not in self.datasets:
            raise NotFound(f"dataset {request.dataset_id!r} not found")
        return trainer_pb2.GetDatasetResponse(dataset=self.datasets[request.dataset_id])

    async def ListDatasets(self, request, context):
        return trainer_pb2.ListDatasetsResponse(datasets=list(self.datasets.values())[::-1])

    async def _emit(self, job_id: str, **event) -> None:
        events = self.events[job_id]
        message = trainer_pb2.WatchJobResponse(sequence=len(events) + 1, time=_now(), **event)
        events.append(message)
        async with self.changed[job_id]:
            self.changed[job_id].notify_all()

    async def _set_state(self, job_id: str, state: int) -> None:
        job = self.jobs[job_id]
        job.state = state
        await self._emit(job_id, job=job)

    async def _run(self, job_id: str) -> None:
        await self._set_state(job_id, trainer_pb2.JOB_STATE_RUNNING)
        for step in range(1, self.steps + 1):
            await asyncio.sleep(self.step_delay)
            metrics = trainer_pb2.TrainingMetrics(
                step=step, loss=5.0 / step, tokens_per_second=1000.0, total_steps=self.steps
            )
            self.jobs[job_id].latest_metrics.CopyFrom(metrics)
            await self._emit(job_id, metrics=metrics)
            if step == 2:
                alert = trainer_pb2.TrainingAlert(
                    kind=trainer_pb2.ALERT_KIND_GRADIENT_EXPLOSION,
                    step=step,
                    message="gradient norm 40x its median",
                    action=trainer_pb2.ALERT_ACTION_WARN,
                )
                self.jobs[job_id].alerts.append(alert)
                await self._emit(job_id, alert=alert)
        job = self.jobs[job_id]
        job.registered_model = job.spec.registration.model_name
        job.registered_version = 1 if job.registered_model else 0
        await self._set_state(job_id, trainer_pb2.JOB_STATE_SUCCEEDED)

    async def SubmitJob(self, request, context):
        spec = request.spec
        if spec.dataset_id not in self.datasets:
            raise FailedPrecondition(f"dataset {spec.dataset_id!r} is not prepared")
        if spec.family == trainer_pb2.MODEL_FAMILY_UNSPECIFIED:
            raise InvalidArgument("spec.family", "required")
        for job in self.jobs.values():
            if request.request_id and job.id.endswith(request.request_id[:8]):
                return trainer_pb2.SubmitJobResponse(job=job)
        job_id = f"job-{len(self.jobs) + 1}-{request.request_id[:8]}"
        job = trainer_pb2.Job(id=job_id, spec=spec, state=trainer_pb2.JOB_STATE_QUEUED)
        job.create_time.CopyFrom(_now())
        self.jobs[job_id] = job
        self.events[job_id] = []
        self.changed[job_id] = asyncio.Condition()
        await self._emit(job_id, job=job)
        self.tasks[job_id] = asyncio.get_running_loop().create_task(self._run(job_id))
        return trainer_pb2.SubmitJobResponse(job=job)

    def _job(self, job_id: str) -> trainer_pb2.Job:
        if job_id not in self.jobs:
            raise NotFound(f"job {job_id!r} not found")
        return self.jobs[job_id]

    async def GetJob(self, request, context):
        return trainer_pb2.GetJobResponse(job=self._job(request.job_id))

    async def ListJobs(self, request, context):
        jobs = [j for j in self.jobs.values() if not request.states or j.state in request.states]
        return trainer_pb2.ListJobsResponse(jobs=jobs[::-1])

    async def CancelJob(self, request, context):
        job = self._job(request.job_id)
        task = self.tasks.get(job.id)
        if task is not None and not task.done():
            task.cancel()
            await self._set_state(job.id, trainer_pb2.JOB_STATE_CANCELLED)
        return trainer_pb2.CancelJobResponse(job=job)

    async def WatchJob(self, request, context):
        self._job(request.job_id)
        sent = request.from_sequence
        terminal = {
            trainer_pb2.JOB_STATE_SUCCEEDED,
            trainer_pb2.JOB_STATE_FAILED,
            trainer_pb2.JOB_STATE_CANCELLED,
        }
        condition = self.changed[request.job_id]
        while True:
            events = self.events[request.job_id]
            for event in events[sent:]:
                sent = event.sequence
                yield event
                if event.HasField("job") and event.job.state in terminal:
                    return
            async with condition:
                if len(self.events[request.job_id]) <= sent:
                    await condition.wait()


class LatticeServices:
    """The three servicers on one LatticeServer (like the gateway), in a background thread.

    A background loop lets sync clients and CLI subprocesses call it while the
    test thread blocks.
    """

    def __init__(self, token: str | None = None, stream_delay: float = 0.0) -> None:
        self.inference = WordInference(token=token, delay=stream_delay)
        self.registry = MemoryRegistry()
        self.trainer = ScriptedTrainer()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: LatticeServer | None = None

    def services(self) -> list[Service]:
        return [
            Service(
                self.inference,
                inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
            ),
            Service(
                self.registry,
                registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
                registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"],
            ),
            Service(
                self.trainer,
                trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
                trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
            ),
        ]

    def run(self, coroutine) -> object:
        future: Future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=30)

    def start(self) -> LatticeServices:
        self._thread.start()

        async def _start() -> LatticeServer:
            server = LatticeServer(self.services(), ServerSettings(port=0, log_json=False))
            await server.start()
            return server

        self.server = self.run(_start())
        return self

    @property
    def address(self) -> str:
        assert self.server is not None
        return self.server.address

    def stop(self) -> None:
        if self.server is not None:
            self.run(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def running_services(**kwargs) -> Iterator[LatticeServices]:
    """Generator for a fixture: started services, stopped afterwards."""
    services = LatticeServices(**kwargs).start()
    try:
        yield services
    finally:
        services.stop()
