"""The servers SDK and CLI tests call: the real registry, and two scripted peers.

The registry is the real service (`services.registry.server.build_server`:
SQLite and the artifact store in a temporary directory) on its own port,
because it verifies internal tokens for its own audience; tests call it with
a token minted for `REGISTRY_CALLER`. Inference and the trainer are small
scripted lattice.v1 servicers on one LatticeServer (with the runtime's error
mapping): an inference service that generates words one at a time and
records whether a stream was cancelled, and a trainer whose jobs emit
scripted events. They are predictable peers for streaming, cancellation and
job-event tests; the service suites test the real inference and trainer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from lattice.errors import (
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
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.registry.server import RegistrySettings, build_server
from services.runtime import LatticeServer, ServerSettings, Service
from services.runtime.identity import Caller
from tests.support.identity import ACME, internal_token

TEST_TOKEN = "test-token"

T = TypeVar("T")


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

    async def _set_state(self, job_id: str, state: trainer_pb2.JobState) -> None:
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


#: Who the tests' registry calls act as: a tenant, as an SDK user reaching the
#: registry through the gateway would. Not an admin: no SDK or CLI test needs
#: an admin-only call (tenant records, load reports), and as a plain tenant
#: every call also goes through the registry's ownership rules.
REGISTRY_CALLER = ACME
#: The remote backend the tests' versions name (`triton://triton.test:8001/m`):
#: the registry refuses any address its allowlist does not match.
REMOTE_BACKEND = "triton.test:8001"


class LatticeServices:
    """The real registry, and the scripted inference and trainer on one
    LatticeServer (like the gateway), all served from one background loop.

    A background loop lets sync clients and CLI subprocesses call them while
    the test thread blocks. The registry is a server of its own: one server
    verifies internal tokens for one audience.
    """

    def __init__(self, data_dir: Path, token: str | None = None, stream_delay: float = 0.0) -> None:
        self.inference = WordInference(token=token, delay=stream_delay)
        self.trainer = ScriptedTrainer()
        self.data_dir = data_dir
        self.registry_settings = RegistrySettings(
            port=0, data_dir=data_dir, log_json=False, remote_allowlist=(REMOTE_BACKEND,)
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: LatticeServer | None = None
        self.registry: LatticeServer | None = None

    def services(self) -> list[Service]:
        """The scripted peers (served again on the same port by restart tests)."""
        return [
            Service(
                self.inference,
                inference_pb2_grpc.add_InferenceServiceServicer_to_server,
                inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
            ),
            Service(
                self.trainer,
                trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
                trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
            ),
        ]

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs `coroutine` on the servers' loop and waits for its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout=30)

    def start(self) -> LatticeServices:
        self._thread.start()

        async def _start() -> tuple[LatticeServer, LatticeServer]:
            server = LatticeServer(self.services(), ServerSettings(port=0, log_json=False))
            await server.start()
            registry = await build_server(self.registry_settings)
            await registry.start()
            return server, registry

        self.server, self.registry = self.run(_start())
        return self

    @property
    def address(self) -> str:
        """The scripted inference and trainer."""
        assert self.server is not None
        return self.server.address

    @property
    def registry_address(self) -> str:
        assert self.registry is not None
        return self.registry.address

    def registry_token(self, caller: Caller = REGISTRY_CALLER) -> str:
        """A bearer token the registry accepts for `caller`, minted now: internal
        tokens live minutes, and a module's servers may outlive one."""
        return internal_token(self.data_dir, "registry", caller)

    def stop(self) -> None:
        for server in (self.server, self.registry):
            if server is not None:
                self.run(server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def running_services(data_dir: Path, **kwargs) -> Iterator[LatticeServices]:
    """Generator for a fixture: started services, stopped afterwards."""
    services = LatticeServices(data_dir, **kwargs).start()
    try:
        yield services
    finally:
        services.stop()
