"""The job runner: queue, concurrency, supervision, restarts, recovery, watch.

Each job runs as one asyncio task that launches a torchrun process group,
tails its event file into the job store, restarts the group from its last
checkpoint when it dies (up to `max_attempts`), then registers the export.
Job state lives in SQLite, so a restarted service resumes RUNNING jobs
(killing the group the dead service left behind) and finishes REGISTERING
ones; registration itself is idempotent (see `registration`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from google.protobuf import timestamp_pb2
from opentelemetry import trace

import services
from lattice.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    LatticeError,
    Unavailable,
)
from lattice.v1 import common_pb2, registry_pb2, trainer_pb2
from services.runtime.identity import Caller
from services.trainer.data.confine import SourceRoots
from services.trainer.data.store import DatasetStore
from services.trainer.jobs import events as worker_events
from services.trainer.jobs import quality
from services.trainer.jobs.launchers import Attempt, Launcher, LocalLauncher
from services.trainer.jobs.metrics import TrainerMetrics
from services.trainer.jobs.process import WORKER_MODULE
from services.trainer.jobs.registration import Registrar
from services.trainer.jobs.store import TERMINAL, JobStore
from services.trainer.jobs.validation import MachineLimits, lookup_dataset, resolve_spec
from services.trainer.registry_client import RegistryClient, job_caller
from services.trainer.worker.config import WorkerConfig

log = logging.getLogger(__name__)

QUEUED = trainer_pb2.JOB_STATE_QUEUED
RUNNING = trainer_pb2.JOB_STATE_RUNNING
REGISTERING = trainer_pb2.JOB_STATE_REGISTERING
SUCCEEDED = trainer_pb2.JOB_STATE_SUCCEEDED
FAILED = trainer_pb2.JOB_STATE_FAILED
CANCELLED = trainer_pb2.JOB_STATE_CANCELLED
FAILED_QUALITY_GATE = trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE


@dataclasses.dataclass(frozen=True)
class RunnerOptions:
    jobs_dir: Path
    max_concurrent_jobs: int = 1
    #: Process-group starts per job (first run plus restarts).
    max_attempts: int = 3
    poll_interval: float = 0.25
    cancel_grace: float = 5.0
    #: Extra torchrun arguments (e.g. "--master-port=29600").
    torchrun_args: tuple[str, ...] = ()
    python: str = sys.executable
    #: 0 = the number of CPUs (or GPUs, for NCCL).
    max_processes_per_node: int = 0
    #: Nodes a job may span; the agents of a multi-node job run on this host.
    max_nodes: int = 1
    stats_interval: int = 10
    histogram_interval: int = 100
    eval_batches: int = 16
    #: Host allocator policy of the workers ("retain" or "system").
    worker_allocator: str = "retain"
    registration_attempts: int = 30
    #: The module torchrun runs per rank (tests inject a faulty worker here).
    worker_module: str = WORKER_MODULE
    registration_retry_seconds: float = 2.0
    #: The key ring workers read a dataset encrypted at rest with ("" = none).
    key_ring_file: str = ""


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def machine_limits(configured: int, max_nodes: int = 1) -> MachineLimits:
    import torch  # the service already has it loaded (tokenizers/transformers)

    cpus = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return MachineLimits(cpus, gpus, configured or max(cpus, gpus), max_nodes)


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        datasets: DatasetStore,
        registry: RegistryClient | None,
        options: RunnerOptions,
        metrics: TrainerMetrics,
        tracer: trace.Tracer | None = None,
        source_roots: SourceRoots | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        """`launcher` runs each attempt; default: torchrun on this host."""
        self.store = store
        #: Where a job spec may name files (evaluation lists), per tenant.
        self.source_roots = source_roots
        self.datasets = datasets
        self.registry = registry
        self.registrar = Registrar(registry) if registry else None
        self.options = options
        self.metrics = metrics
        self.tracer = tracer or trace.get_tracer("lattice.trainer")
        self.launcher: Launcher = launcher or LocalLauncher(
            machine_limits(options.max_processes_per_node, options.max_nodes),
            self.worker_environment,
            options.torchrun_args,
            options.python,
            options.worker_module,
            options.jobs_dir,
        )
        self.limits = self.launcher.limits
        self._tasks: dict[str, asyncio.Task] = {}
        self._groups: dict[str, Attempt] = {}
        self._cancelling: set[str] = set()
        self._setup_failures: dict[str, str] = {}
        self._changed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._scheduler: asyncio.Task | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        for job in self.store.in_states([RUNNING, REGISTERING]):
            try:
                killed = await self.launcher.clean_stale(job.id)
                note = "stopped the attempt it left behind; " if killed else ""
            except LatticeError as error:  # the next attempt will say so again, or run
                note = f"could not check for the attempt it left behind ({error.message}); "
            await self._append(
                job.id,
                [
                    trainer_pb2.WatchJobResponse(
                        log=f"trainer restarted: {note}resuming from the last checkpoint"
                    )
                ],
            )
        self._refresh_counts()
        self._scheduler = asyncio.create_task(self._schedule(), name="trainer-scheduler")

    async def stop(self) -> None:
        """Stop supervising: process groups are stopped, jobs stay RUNNING and resume
        (from their last checkpoint) when the service starts again."""
        if self._scheduler:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def running_group(self, job_id: str) -> Attempt | None:
        """The live process group of a job (tests use it to kill a worker)."""
        return self._groups.get(job_id)

    # -- RPC-facing operations ----------------------------------------------------------------

    async def submit(
        self, caller: Caller, spec: trainer_pb2.JobSpec, request_id: str = ""
    ) -> trainer_pb2.Job:
        """Queue a job owned by the caller's tenant, on a dataset the caller may see."""
        if request_id:
            existing = self.store.by_request_id(caller.tenant, request_id)
            if existing is not None:
                return existing
        dataset_dir = lookup_dataset(self.datasets, spec.dataset_id, caller)
        confine = self.source_roots.for_tenant(caller.tenant) if self.source_roots else None
        resolved = resolve_spec(spec, dataset_dir, self.limits, confine, keys=self.datasets.keys)
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        for ref in (resolved.base_model, resolved.initial_word_embeddings):
            if not ref:
                continue
            if self.registry is None:
                raise FailedPrecondition("registered models need a registry (registry_address)")
            client = self.registry.as_caller(job_caller(caller.tenant, job_id))
            version = await client.resolve_version(ref)
            if ref == resolved.initial_word_embeddings and (
                version.format != common_pb2.ARTIFACT_FORMAT_WORD_VECTORS
            ):
                raise FailedPrecondition(
                    f"initial_word_embeddings {ref!r} is not a word-embedding version "
                    "(WORD2VEC or GLOVE)"
                )
        job = trainer_pb2.Job(
            id=job_id, spec=resolved, state=QUEUED, create_time=_now(), tenant=caller.tenant
        )
        try:
            self.store.create(job, request_id)
        except LatticeError:
            existing = self.store.by_request_id(caller.tenant, request_id)
            if existing is None:
                raise
            return existing
        await self._append(job.id, [trainer_pb2.WatchJobResponse(job=job)])
        self._refresh_counts()
        assert self._wake is not None
        self._wake.set()
        return job

    def get(self, caller: Caller, job_id: str) -> trainer_pb2.Job:
        return self.store.get_for(caller, job_id)

    def list(self, caller: Caller, states, offset: int, limit: int) -> list[trainer_pb2.Job]:
        tenant = None if caller.admin else caller.tenant
        return self.store.list(states, offset, limit, tenant)

    async def cancel(self, caller: Caller, job_id: str) -> trainer_pb2.Job:
        job = self.store.get_for(caller, job_id)
        if job.state in TERMINAL:
            return job
        task = self._tasks.get(job_id)
        if task is None:  # queued: nothing runs yet
            job.state = CANCELLED
            job.end_time.GetCurrentTime()
            await self._transition(job)
            return job
        self._cancelling.add(job_id)
        group = self._groups.get(job_id)
        if group is not None:
            await group.stop(self.options.cancel_grace)
        else:
            task.cancel()
        await asyncio.wait([task], timeout=self.options.cancel_grace + 10)
        return self.store.get(job_id)

    async def watch(
        self, caller: Caller, job_id: str, from_sequence: int
    ) -> AsyncIterator[trainer_pb2.WatchJobResponse]:
        self.store.get_for(caller, job_id)
        sequence = from_sequence
        assert self._changed is not None
        while True:
            batch = self.store.events_after(job_id, sequence)
            for event in batch:
                sequence = event.sequence
                yield event
            if batch:
                continue
            if self.store.get(job_id).state in TERMINAL:
                if not self.store.events_after(job_id, sequence, limit=1):
                    return
                continue
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1.0)

    # -- the queue -----------------------------------------------------------------------

    async def _schedule(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            free = self.options.max_concurrent_jobs - len(self._tasks)
            if free > 0:
                # Interrupted jobs first, then the queue in submission order.
                candidates = self.store.in_states([RUNNING, REGISTERING]) + self.store.in_states(
                    [QUEUED]
                )
                for job in [j for j in candidates if j.id not in self._tasks][:free]:
                    task = asyncio.create_task(self._run(job.id), name=f"job-{job.id}")
                    self._tasks[job.id] = task
                    task.add_done_callback(functools.partial(self._forget, job.id))
            await self._wake.wait()

    def _forget(self, job_id: str, _task: asyncio.Task | None = None) -> None:
        self._tasks.pop(job_id, None)
        self._cancelling.discard(job_id)
        if self._wake is not None:
            self._wake.set()

    # -- one job ---------------------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        job_dir = self.options.jobs_dir / job_id
        with self.tracer.start_as_current_span("trainer.job", attributes={"job.id": job_id}):
            try:
                if job.state == QUEUED:
                    job.state = RUNNING
                    job.start_time.GetCurrentTime()
                    await self._transition(job)
                result = _read_result(job_dir)
                if job.state == RUNNING and result is None:
                    with self.tracer.start_as_current_span("trainer.job.prepare"):
                        await self._prepare(job, job_dir)
                    with self.tracer.start_as_current_span("trainer.job.train"):
                        result = await self._train(job_id, job_dir)
                    if result is None:
                        return
                job = self.store.get(job_id)
                if result is None or result.get("outcome") == "alert_stop":
                    reason = (result or {}).get("error") or _last_stop_alert(job)
                    await self._fail(job, f"stopped by alert: {reason}")
                    return
                refused = quality.refusal(job.spec, result)
                if refused is not None:
                    job.state, job.error = FAILED_QUALITY_GATE, f"quality gate: {refused}"
                    job.end_time.GetCurrentTime()
                    await self._transition(job)
                    return
                if job.state != REGISTERING:
                    job.state = REGISTERING
                    await self._transition(job)
                with self.tracer.start_as_current_span("trainer.job.register"):
                    version = await self._register(job, job_dir, result)
                job = self.store.get(job_id)
                job.registered_model, job.registered_version = version.model_name, version.version
                job.state = SUCCEEDED
                job.end_time.GetCurrentTime()
                self.metrics.registrations.inc()
                await self._transition(job)
                # The registry holds the result now; checkpoints only cost disk.
                for name in ("checkpoints", "best", "base"):
                    await asyncio.to_thread(shutil.rmtree, job_dir / name, True)
            except asyncio.CancelledError:
                if job_id in self._cancelling:
                    await asyncio.shield(self._mark_cancelled(job_id))
                raise
            except LatticeError as error:
                await self._fail(self.store.get(job_id), error.message)
            except Exception as error:
                log.exception("job %s failed", job_id)
                await self._fail(self.store.get(job_id), f"internal error: {error}")

    async def _prepare(self, job: trainer_pb2.Job, job_dir: Path) -> None:
        await asyncio.to_thread(job_dir.mkdir, parents=True, exist_ok=True)
        if (job_dir / "job.json").is_file():
            return
        base_dir = None
        if job.spec.base_model:
            assert self.registry is not None
            client = self.registry.as_caller(job_caller(job.tenant, job.id))
            version = await client.resolve_version(job.spec.base_model)
            base_dir = job_dir / "base"
            await client.download(version, base_dir)
            (job_dir / "base_version.binpb").write_bytes(version.SerializeToString())
        words_dir = None
        if job.spec.initial_word_embeddings:
            assert self.registry is not None
            client = self.registry.as_caller(job_caller(job.tenant, job.id))
            version = await client.resolve_version(job.spec.initial_word_embeddings)
            words_dir = job_dir / "word_vectors"
            await client.download(version, words_dir)
        WorkerConfig(
            job_id=job.id,
            spec=job.spec,
            dataset_dir=self.datasets.path(job.spec.dataset_id),
            job_dir=job_dir,
            base_model_dir=base_dir,
            word_vectors_dir=words_dir,
            stats_interval=self.options.stats_interval,
            histogram_interval=self.options.histogram_interval,
            eval_batches=self.options.eval_batches,
            allocator=self.options.worker_allocator,
            key_ring_file=self.options.key_ring_file,
        ).save()

    def worker_environment(self) -> dict[str, str]:
        """What a job's torchrun (and so each worker) starts with."""
        root = str(Path(services.__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.setdefault("TRANSFORMERS_VERBOSITY", "error")
        env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def _train(self, job_id: str, job_dir: Path) -> dict | None:
        tail = worker_events.EventFileTail(
            job_dir / "events.jsonl", self.store.events_offset(job_id)
        )
        while True:
            job = self.store.get(job_id)
            job.attempts += 1
            self.store.save(job)
            self.metrics.attempts.inc()
            log_path = job_dir / f"attempt-{job.attempts}.log"
            group = await self.launcher.launch(job, job_dir, log_path)
            self.store.set_process_group(job_id, group.pgid, group.started)
            self._groups[job_id] = group
            await self._append(
                job_id,
                [
                    trainer_pb2.WatchJobResponse(
                        log=f"{group.label} started (attempt {job.attempts}, "
                        f"{job.spec.distributed.processes_per_node} process(es))"
                    )
                ],
            )
            logs = _LogTail(log_path)
            waiter = asyncio.create_task(group.wait())
            try:
                while not waiter.done():
                    await asyncio.wait([waiter], timeout=self.options.poll_interval)
                    await self._drain(job_id, tail, logs)
            except asyncio.CancelledError:
                await asyncio.shield(group.stop(self.options.cancel_grace))
                raise
            finally:
                self._groups.pop(job_id, None)
            code = waiter.result()
            await self._drain(job_id, tail, logs)
            if job_id in self._cancelling:
                await self._mark_cancelled(job_id)
                return None
            result = _read_result(job_dir)
            if code == 0 and result is not None:
                return result
            job = self.store.get(job_id)
            setup_failure = self._setup_failures.pop(job_id, None)
            if setup_failure is not None:
                await self._fail(job, f"the job cannot be set up: {setup_failure}")
                return None
            if job.attempts >= self.options.max_attempts:
                await self._fail(
                    job,
                    f"process group exited with code {code} on attempt {job.attempts} of "
                    f"{self.options.max_attempts}; last log lines: {logs.last_lines()}",
                )
                return None
            await self._append(
                job_id,
                [
                    trainer_pb2.WatchJobResponse(
                        log=f"process group exited with code {code}; restarting from the "
                        f"checkpoint at step {job.checkpoint_step}"
                    )
                ],
            )

    async def _drain(self, job_id: str, tail: worker_events.EventFileTail, logs: _LogTail) -> None:
        records = tail.read()
        lines = logs.read()
        if not records and not lines:
            return
        job = self.store.get(job_id)
        events: list[trainer_pb2.WatchJobResponse] = []
        changed = False
        for record in records:
            if record.get("type") == "setup_failed":
                self._setup_failures[job_id] = str(record.get("message", ""))
            produced, touched = worker_events.apply(record, job)
            changed |= touched
            events += produced
            for event in produced:
                if event.HasField("alert"):
                    self.metrics.alert(event.alert)
                elif event.HasField("metrics"):
                    self.metrics.steps.inc()
                    self.metrics.tokens_per_second.set(event.metrics.tokens_per_second)
        events += [trainer_pb2.WatchJobResponse(log=line) for line in lines]
        self.store.append_events(job_id, events, tail.offset, job if changed else None)
        await self._notify()

    async def _register(
        self, job: trainer_pb2.Job, job_dir: Path, result: dict
    ) -> registry_pb2.ModelVersion:
        if self.registrar is None:
            raise FailedPrecondition("no registry configured (registry_address)")
        base = None
        base_path = job_dir / "base_version.binpb"
        if base_path.is_file():
            base = registry_pb2.ModelVersion.FromString(base_path.read_bytes())
        digest = self.datasets.get(job.spec.dataset_id).digest
        for attempt in range(1, self.options.registration_attempts + 1):
            try:
                return await self.registrar.register(
                    job, Path(result["export_dir"]), result, digest, base
                )
            except (Unavailable, DeadlineExceeded) as error:
                if attempt == self.options.registration_attempts:
                    raise
                await self._append(
                    job.id,
                    [
                        trainer_pb2.WatchJobResponse(
                            log=f"registry unavailable ({error.message}); retrying"
                        )
                    ],
                )
                await asyncio.sleep(self.options.registration_retry_seconds)
        raise AssertionError("unreachable")

    # -- state changes ---------------------------------------------------------------------

    async def _append(
        self, job_id: str, events: builtins.list[trainer_pb2.WatchJobResponse]
    ) -> None:
        self.store.append_events(job_id, events)
        await self._notify()

    async def _transition(self, job: trainer_pb2.Job) -> None:
        snapshot = trainer_pb2.Job()
        snapshot.CopyFrom(job)
        self.store.append_events(job.id, [trainer_pb2.WatchJobResponse(job=snapshot)], job=job)
        self._refresh_counts()
        await self._notify()

    async def _fail(self, job: trainer_pb2.Job, error: str) -> None:
        job.state, job.error = FAILED, error[:2000]
        job.end_time.GetCurrentTime()
        await self._transition(job)

    async def _mark_cancelled(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job.state not in TERMINAL:
            job.state = CANCELLED
            job.end_time.GetCurrentTime()
            await self._transition(job)

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    def _refresh_counts(self) -> None:
        self.metrics.set_job_counts(self.store.counts())


class _LogTail:
    """New lines of an attempt's log, for `log` events (bounded per poll)."""

    def __init__(self, path: Path) -> None:
        self.tail = worker_events.EventFileTail(path, 0)
        self.recent: list[str] = []

    def read(self, limit: int = 200) -> list[str]:
        try:
            with self.tail.path.open("rb") as handle:
                handle.seek(self.tail.offset)
                chunk = handle.read(1024 * 1024)
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.tail.offset += end + 1
        lines = [
            line.decode("utf-8", "replace").rstrip()[:1000]
            for line in chunk[: end + 1].splitlines()
            if line.strip()
        ]
        self.recent = (self.recent + lines)[-200:]
        return lines[:limit]

    def last_lines(self, count: int = 5) -> str:
        """The worker's exception if the log shows one, else the last lines."""
        self.read()
        errors = [line for line in self.recent if _EXCEPTION.search(line)]
        return " | ".join(errors[-2:] or self.recent[-count:])


_EXCEPTION = re.compile(r"\b\w*(Error|Exception)\b: ")


def _read_result(job_dir: Path) -> dict | None:
    try:
        return json.loads((job_dir / "result.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _last_stop_alert(job: trainer_pb2.Job) -> str:
    for alert in reversed(job.alerts):
        if alert.action != trainer_pb2.ALERT_ACTION_WARN:
            return f"{trainer_pb2.AlertKind.Name(alert.kind)} at step {alert.step}: {alert.message}"
    return "unknown"
