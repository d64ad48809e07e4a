"""Keeps this replica's loaded versions equal to what the registry has online.

The registry view's events only mark the state dirty; one reconcile task
compares the online set with what is loaded and acts:
- a newly online version is fetched (digest verified), loaded, warmed up with
  one request and only then READY; fetches run concurrently, loads one at a
  time per process (concurrent transformers loads race, see `_LOAD_LOCK`);
- a version that went offline keeps serving until every version now routed
  for its model has settled (READY or FAILED), then DRAINs: it takes no new
  requests, its in-flight ones finish, and it is unloaded. So moving a
  deployment v1 -> v2 never leaves a moment without a READY version;
- a failed load stays FAILED with its error (shown by ListLoadedModels) and is
  retried with backoff while the version stays online (a digest mismatch is
  retried too, in case the stored bytes are repaired). The error is a
  path-free sentence (`load_reports.failure_reason`), and each change of a
  version's fate (failed for a new reason, loaded after failing) is reported
  to the registry's deployment history in the background.

`acquire` resolves a model reference to a READY version and leases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from lattice.errors import (
    FailedPrecondition,
    LatticeError,
    NotFound,
    Unavailable,
)
from lattice.refs import ModelRef
from lattice.routing import pick_weighted
from lattice.v1 import common_pb2, registry_pb2
from services.inference.backends import (
    Backend,
    BackendFactory,
    GenerationParams,
    LoadSpec,
    Task,
)
from services.inference.batcher import BatchObserver
from services.inference.fetch import ArtifactFetcher
from services.inference.load_reports import LoadReports, failure_reason
from services.inference.serving import ServingVersion, VersionState
from services.runtime.registry_view import RegistryView

log = logging.getLogger(__name__)

#: How often READY versions are asked whether their backend died (`Backend.lost`).
LOST_CHECK_SECONDS = 1.0

_TASKS = {
    common_pb2.MODEL_TASK_TEXT_GENERATION: Task.GENERATE,
    common_pb2.MODEL_TASK_EMBEDDING: Task.EMBED,
    common_pb2.MODEL_TASK_CLASSIFICATION: Task.CLASSIFY,
}


class ModelManager:
    """Loads, serves and unloads versions as the registry view changes."""

    def __init__(
        self,
        view: RegistryView,
        fetcher: ArtifactFetcher,
        factories: Mapping[int, BackendFactory],
        *,
        device: str = "cpu",
        max_batch_size: int = 32,
        max_batch_wait: float = 0.005,
        drain_timeout: float = 60.0,
        retry_min: float = 2.0,
        retry_max: float = 60.0,
        batch_observer: Callable[[ServingVersion], BatchObserver] | None = None,
        tracer_provider: TracerProvider | None = None,
        reports: LoadReports | None = None,
    ) -> None:
        self._view = view
        self._reports = reports
        # The last failure reported per version; popped when it loads or goes offline.
        self._reported: dict[tuple[str, int], str] = {}
        self._report_tasks: set[asyncio.Task[None]] = set()
        self._fetcher = fetcher
        self._factories = dict(factories)
        self._device = device
        self._max_batch_size = max_batch_size
        self._max_batch_wait = max_batch_wait
        self._drain_timeout = drain_timeout
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._batch_observer = batch_observer
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._versions: dict[tuple[str, int], ServingVersion] = {}
        self._tasks: dict[tuple[str, int], asyncio.Task[None]] = {}
        self._dirty = asyncio.Event()
        self._changed = asyncio.Condition()
        self._runner: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self._view.add_listener(self._on_event)
        self._dirty.set()
        self._runner = asyncio.create_task(self._run(), name="model-manager")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        tasks = [*self._tasks.values(), *self._report_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for entry in list(self._versions.values()):
            await entry.close()
        self._versions.clear()

    @property
    def view(self) -> RegistryView:
        return self._view

    def _on_event(self, _event: registry_pb2.WatchResponse) -> None:
        self._dirty.set()

    def versions(self) -> list[ServingVersion]:
        return [self._versions[k] for k in sorted(self._versions)]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait until `predicate()` holds after some state change (tests, drains)."""

        async def _wait() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(_wait(), timeout)

    def settled(self) -> bool:
        """Every version online in the registry has been tried here: READY or FAILED."""
        if not self._view.synced:
            return False
        for key in self._view.online_versions():
            entry = self._versions.get(key)
            if entry is None or entry.state is VersionState.LOADING:
                return False
        return True

    async def wait_settled(self) -> None:
        """Readiness: the registry view is synced and the deployed versions are loaded
        (or have failed to, which ListLoadedModels shows and the gateway routes around)."""
        await self._view.wait_synced()
        await self.wait_for(self.settled)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- reconciling ----------------------------------------------------------

    async def _run(self) -> None:
        while True:
            timeout = self._next_retry_in()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout)
            self._dirty.clear()
            try:
                self._reconcile()
            except Exception:
                log.exception("reconcile failed")
            await self._notify()

    def _next_retry_in(self) -> float | None:
        waits = [
            self._retry_delay(e) - (time.monotonic() - e.failed_at)
            for e in self._versions.values()
            if e.state is VersionState.FAILED
        ]
        if any(e.state is VersionState.READY for e in self._versions.values()):
            waits.append(LOST_CHECK_SECONDS)
        return max(0.0, min(waits)) if waits else None

    def _retry_delay(self, entry: ServingVersion) -> float:
        return min(self._retry_max, self._retry_min * 2 ** max(0, entry.attempts - 1))

    def _reconcile(self) -> None:
        for loaded in list(self._versions.values()):
            reason = loaded.backend.lost() if loaded.backend is not None else None
            if loaded.state is VersionState.READY and reason:
                self._lose(loaded, reason)
        online = self._view.online_versions()
        for key, version in online.items():
            entry = self._versions.get(key)
            if entry is None:
                self._start_load(version)
            elif entry.state is VersionState.FAILED:
                if time.monotonic() - entry.failed_at >= self._retry_delay(entry):
                    self._start_load(version, entry)
            elif entry.state is VersionState.DRAINING and not entry.unloading:
                entry.state = VersionState.READY  # back online before it was unloaded
                log.info("%s is online again; serving", entry.label)
        for key, entry in list(self._versions.items()):
            if key in online:
                continue
            if entry.state in (VersionState.LOADING, VersionState.FAILED):
                self._reported.pop(key, None)
                task = self._tasks.pop(key, None)
                if task is not None:
                    task.cancel()
                self._versions.pop(key, None)
            elif entry.state is VersionState.READY and self._successors_settled(key[0], online):
                self._start_drain(entry)

    def _successors_settled(self, name: str, online: Mapping[tuple[str, int], object]) -> bool:
        """True when an offline version of `name` may drain: every online
        version of the model has settled here and one with traffic is READY.
        If every new version failed, the old one keeps serving."""
        deployment = self._view.deployment(name)
        routed = {r.version for r in deployment.routes if r.weight > 0} if deployment else set()
        any_ready = not routed  # the model went offline entirely: drain now
        for key in online:
            if key[0] != name:
                continue
            entry = self._versions.get(key)
            if entry is None or entry.state is VersionState.LOADING:
                return False
            if entry.state is VersionState.READY and key[1] in routed:
                any_ready = True
        return any_ready

    def _start_load(
        self, version: registry_pb2.ModelVersion, entry: ServingVersion | None = None
    ) -> None:
        model = self._view.model(version.model_name)
        task = _TASKS.get(model.task if model is not None else common_pb2.MODEL_TASK_UNSPECIFIED)
        key = (version.model_name, version.version)
        if entry is None:
            entry = ServingVersion(
                version.model_name,
                version.version,
                version.artifact_digest,
                task or Task.GENERATE,
            )
            self._versions[key] = entry
        entry.state = VersionState.LOADING
        entry.settled.clear()
        entry.attempts += 1
        self._tasks[key] = asyncio.create_task(
            self._load(entry, version, task), name=f"load:{entry.label}"
        )

    async def _load(
        self, entry: ServingVersion, version: registry_pb2.ModelVersion, task: Task | None
    ) -> None:
        backend: Backend | None = None
        started = time.perf_counter()
        try:
            if task is None:
                raise FailedPrecondition(
                    f"model {entry.name!r} has a task this service does not serve"
                )
            factory = self._factories.get(version.format)
            if factory is None:
                fmt = common_pb2.ArtifactFormat.Name(version.format)
                raise FailedPrecondition(f"no backend serves artifact format {fmt}")
            model_dir: Path | None = await self._fetcher.fetch(version)
            spec = LoadSpec(
                model_name=entry.name,
                version=entry.version,
                task=task,
                artifact_uri=version.artifact_uri,
                artifact_digest=version.artifact_digest,
                model_dir=model_dir,
                params=dict(version.params),
                tags=dict(version.tags),
                device=self._device,
            )
            backend = factory(spec)
            entry.backend_kind = backend.kind
            async with _one_load_at_a_time():
                entry.info = await backend.load()
            await _warm_up(backend, task)
            entry.backend = backend
            entry.start_batching(
                max_batch_size=self._max_batch_size,
                max_wait=self._max_batch_wait,
                observer=self._batch_observer(entry) if self._batch_observer else None,
                tracer=self._tracer,
            )
            entry.mark_ready()
            entry.attempts = 0
            if self._reported.pop(entry.key, None) is not None:
                self._report(entry, loaded=True, reason="")
            log.info(
                "%s READY (%s, loaded and warmed up in %.2fs)",
                entry.label,
                entry.backend_kind,
                time.perf_counter() - started,
            )
        except asyncio.CancelledError:
            if backend is not None:
                await backend.unload()
            raise
        except Exception as exc:
            if backend is not None:
                with contextlib.suppress(Exception):
                    await backend.unload()
            entry.backend = None
            message = failure_reason(exc)
            entry.mark_failed(message)
            log.error(
                "%s FAILED to load (attempt %d): %s",
                entry.label,
                entry.attempts,
                message,
                exc_info=not isinstance(exc, LatticeError),
            )
            if self._reported.get(entry.key) != message:
                self._reported[entry.key] = message
                self._report(entry, loaded=False, reason=message)
        finally:
            if self._tasks.get(entry.key) is asyncio.current_task():
                del self._tasks[entry.key]
            self._dirty.set()

    def _report(self, entry: ServingVersion, *, loaded: bool, reason: str) -> None:
        """Send a load outcome to the registry without holding up loading."""
        if self._reports is None:
            return
        task = asyncio.create_task(
            self._reports.report(entry.name, entry.version, loaded=loaded, reason=reason),
            name=f"report:{entry.label}",
        )
        self._report_tasks.add(task)
        task.add_done_callback(self._report_tasks.discard)

    def _lose(self, entry: ServingVersion, reason: str) -> None:
        """A READY version whose backend died: FAILED now (requests go
        elsewhere or get UNAVAILABLE), its remains unloaded, and reloaded
        after the usual retry delay."""
        message = f"{reason}; reloading"
        log.error("%s lost: %s", entry.label, message)
        entry.mark_failed(message)
        entry.attempts = 1
        self._reported[entry.key] = message
        self._report(entry, loaded=False, reason=message)
        self._tasks[entry.key] = asyncio.create_task(
            self._unload_lost(entry), name=f"lost:{entry.label}"
        )

    async def _unload_lost(self, entry: ServingVersion) -> None:
        try:
            await entry.close()
        finally:
            if self._tasks.get(entry.key) is asyncio.current_task():
                del self._tasks[entry.key]
            self._dirty.set()

    def _start_drain(self, entry: ServingVersion) -> None:
        entry.state = VersionState.DRAINING
        log.info("%s offline: draining %d in-flight request(s)", entry.label, entry.in_flight)
        self._tasks[entry.key] = asyncio.create_task(
            self._drain(entry), name=f"drain:{entry.label}"
        )

    async def _drain(self, entry: ServingVersion) -> None:
        try:
            deadline = time.monotonic() + self._drain_timeout
            # Pinned requests may still lease a draining version, so re-check
            # after every wake-up; no await between the check and `unloading`.
            while entry.in_flight and time.monotonic() < deadline:
                await entry.wait_idle(deadline - time.monotonic())
            if entry.in_flight:
                log.warning("%s: drain timed out with %d in flight", entry.label, entry.in_flight)
            if entry.state is not VersionState.DRAINING:
                return  # it came back online meanwhile
            entry.unloading = True  # from here on no lease is granted
            await entry.close()
            if self._versions.get(entry.key) is entry:
                del self._versions[entry.key]
            log.info("%s unloaded", entry.label)
        finally:
            if self._tasks.get(entry.key) is asyncio.current_task():
                del self._tasks[entry.key]
            self._dirty.set()

    # -- serving ------------------------------------------------------------

    def resolve_version(self, ref: ModelRef) -> int | None:
        """The pinned version number of `ref` (None for a bare name).
        NOT_FOUND for an unknown model, alias or version."""
        if not self._view.synced:
            raise Unavailable("this replica has not synced with the registry yet; retry shortly")
        if self._view.model(ref.name) is None:
            raise NotFound(f"model {ref.name!r} not found")
        if ref.alias:
            number = self._view.alias(ref.name, ref.alias)
            if number is None:
                raise NotFound(f"model {ref.name!r} has no alias {ref.alias!r}")
            return number
        if ref.version:
            if self._view.version(ref.name, ref.version) is None:
                raise NotFound(f"model {ref.name!r} has no version {ref.version}")
            return ref.version
        return None

    def pick_now(self, ref: ModelRef, routing_key: str = "") -> ServingVersion | None:
        """`pick` without waiting: the version to use, or None while the
        version(s) it should use are still loading (no await: hot path)."""
        return self._choose(ref, routing_key)[0]

    async def pick(
        self, ref: ModelRef, routing_key: str = "", *, timeout: float = 30.0
    ) -> ServingVersion:
        """A READY version for `ref`, waiting up to `timeout` while the
        version(s) it should use are still loading."""
        deadline = time.monotonic() + timeout
        while True:
            entry, waiting_on = self._choose(ref, routing_key)
            if entry is not None:
                return entry
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(
                    f"{ref} is still loading on this replica; retry shortly",
                )
            await self._wait_settled(waiting_on, remaining)

    def _choose(
        self, ref: ModelRef, routing_key: str
    ) -> tuple[ServingVersion | None, list[ServingVersion]]:
        pinned = self.resolve_version(ref)
        name = ref.name
        if pinned is not None:
            entry = self._versions.get((name, pinned))
            if (name, pinned) not in self._view.online_versions():
                if entry is not None and entry.servable:
                    # Offline in the registry but still loaded here (retiring
                    # or draining): a router with a slightly older view may
                    # still pin it, and that must not fail mid-rollout.
                    return entry, []
                raise FailedPrecondition(
                    f"version {pinned} of model {name!r} is not online; deploy it first"
                )
            return self._usable(entry, [entry])
        deployment = self._view.deployment(name)
        routes = [r for r in (deployment.routes if deployment else []) if r.weight > 0]
        if not routes:
            raise FailedPrecondition(f"model {name!r} is offline (no version has traffic)")
        entries = {r.version: self._versions.get((name, r.version)) for r in routes}
        ready = [
            (r.version, r.weight)
            for r in routes
            if (e := entries[r.version]) is not None and e.state is VersionState.READY
        ]
        if len(ready) == 1:  # the common case: one version has all the traffic
            return self._versions[(name, ready[0][0])], []
        if ready:
            return self._versions[(name, pick_weighted(name, ready, routing_key))], []
        # Nothing routed is READY yet: the previous deployment's versions keep
        # serving until the new ones are (see the module docstring).
        retiring = [
            e for e in self._versions.values() if e.name == name and e.state is VersionState.READY
        ]
        if retiring:
            return max(retiring, key=lambda e: e.version), []
        loading = [e for e in entries.values() if e is not None and e.state is VersionState.LOADING]
        if loading or any(e is None for e in entries.values()):
            return None, loading
        errors = "; ".join(f"{e.label}: {e.error}" for e in entries.values() if e is not None)
        raise Unavailable(f"no version of {name!r} could be loaded on this replica ({errors})")

    def _usable(
        self, entry: ServingVersion | None, waiting: list[ServingVersion | None]
    ) -> tuple[ServingVersion | None, list[ServingVersion]]:
        if entry is None or entry.state is VersionState.LOADING:
            return None, [e for e in waiting if e is not None]
        if entry.state is VersionState.FAILED:
            raise Unavailable(f"{entry.label} failed to load on this replica: {entry.error}")
        return entry, []

    async def _wait_settled(self, entries: list[ServingVersion], timeout: float) -> None:
        if entries:
            waiters = [asyncio.ensure_future(e.settled.wait()) for e in entries]
            try:
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        else:  # not registered yet: wait for the reconcile loop's next pass
            with contextlib.suppress(TimeoutError):
                async with self._changed:
                    await asyncio.wait_for(self._changed.wait(), min(timeout, 0.5))

    def count_prompt_tokens(self, name: str, version: int, text: str) -> int:
        """`text`'s length in tokens for a loaded version (0 when it cannot tell)."""
        entry = self._versions.get((name, version))
        backend = entry.backend if entry is not None else None
        count = backend.count_tokens(text) if backend is not None else None
        return count or 0

    def weight_of(self, entry: ServingVersion) -> int:
        deployment = self._view.deployment(entry.name)
        if deployment is None:
            return 0
        return next((r.weight for r in deployment.routes if r.version == entry.version), 0)


#: Held while a backend loads. Concurrent `from_pretrained` calls in one process
#: race inside transformers and torch: the first ones fail on a half-done lazy
#: import ("cannot import name 'AutoModel'"), later ones on shared meta-device
#: init ("Cannot copy out of meta tensor"). A thread lock, not an asyncio one, so
#: every manager and event loop in the process shares it.
_LOAD_LOCK = threading.Lock()


@contextlib.asynccontextmanager
async def _one_load_at_a_time() -> AsyncIterator[None]:
    """Serialise loads in this process; waiting for the lock stays cancellable."""
    acquiring = asyncio.ensure_future(asyncio.to_thread(_LOAD_LOCK.acquire))
    try:
        await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        # The thread still gets the lock in the end: hand it straight back then.
        acquiring.add_done_callback(lambda _: _LOAD_LOCK.release())
        raise
    try:
        yield
    finally:
        _LOAD_LOCK.release()


async def _warm_up(backend: Backend, task: Task) -> None:
    """One real request, so the first client does not pay for lazy init."""
    if task is Task.GENERATE:
        await backend.generate("Hello", GenerationParams(max_new_tokens=1))
    elif task is Task.CLASSIFY:
        await backend.classify(["warm up"])
    else:
        await backend.embed(["warm up"], normalize=False)
