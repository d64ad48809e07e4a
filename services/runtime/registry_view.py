"""A local copy of the registry, kept current by the registry's Watch stream.

`RegistryState` is the plain data structure (models, versions, aliases,
deployments, policies and the revision they reflect) that both the registry
itself and every subscriber maintain by applying the same `WatchResponse`
events. `RegistryView` fills one from a Watch stream: it reconnects with
backoff, resumes from the last applied revision (so it misses nothing and
applies nothing twice), and swaps in a full snapshot atomically after a RESET
so readers never see a half-built state.

A view watches as a suite service (`service_caller`, an admin): the gateway
routes and inference serves every tenant's models, so their copy must hold
all of them. Tenant-scoped Watch is for callers that come through the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence

import grpc
from opentelemetry.sdk.trace import TracerProvider

from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.runtime.channels import create_channel
from services.runtime.identity import Caller, service_caller

log = logging.getLogger(__name__)

EventType = registry_pb2.WatchEventType
Listener = Callable[[registry_pb2.WatchResponse], Awaitable[None] | None]


class RegistryState:
    """Everything the registry knows, as protos, plus the revision it reflects.

    Stored messages are never mutated in place; a change replaces them, so a
    reader may hold on to one safely.
    """

    def __init__(self) -> None:
        self.revision = 0
        self.models: dict[str, registry_pb2.Model] = {}
        self.versions: dict[str, dict[int, registry_pb2.ModelVersion]] = {}
        self.aliases: dict[str, dict[str, registry_pb2.Alias]] = {}
        self.deployments: dict[str, registry_pb2.Deployment] = {}
        self.policies: dict[str, registry_pb2.ModelPolicy] = {}
        #: Tenant records by name (tenants without one are enabled, default quotas).
        self.tenants: dict[str, registry_pb2.Tenant] = {}

    # -- applying changes ---------------------------------------------------

    def apply(self, event: registry_pb2.WatchResponse) -> None:
        """Apply one PUT/DELETE event (RESET and SYNCED only move the revision)."""
        kind = event.WhichOneof("object")
        if event.type == EventType.WATCH_EVENT_TYPE_PUT and kind is not None:
            self.put(getattr(event, kind))
        elif event.type == EventType.WATCH_EVENT_TYPE_DELETE and kind is not None:
            self.delete(getattr(event, kind))
        self.revision = max(self.revision, event.revision)

    def put(self, obj) -> None:
        if isinstance(obj, registry_pb2.Model):
            self.models[obj.name] = obj
        elif isinstance(obj, registry_pb2.ModelVersion):
            self.versions.setdefault(obj.model_name, {})[obj.version] = obj
        elif isinstance(obj, registry_pb2.Alias):
            self.aliases.setdefault(obj.model_name, {})[obj.alias] = obj
        elif isinstance(obj, registry_pb2.Deployment):
            self.deployments[obj.model_name] = obj
        elif isinstance(obj, registry_pb2.ModelPolicy):
            self.policies[obj.model_name] = obj
        elif isinstance(obj, registry_pb2.Tenant):
            self.tenants[obj.name] = obj

    def delete(self, obj) -> None:
        """Remove `obj`; deleting a model removes everything that belongs to it."""
        if isinstance(obj, registry_pb2.Model):
            for table in (
                self.models,
                self.versions,
                self.aliases,
                self.deployments,
                self.policies,
            ):
                table.pop(obj.name, None)
        elif isinstance(obj, registry_pb2.ModelVersion):
            self.versions.get(obj.model_name, {}).pop(obj.version, None)
        elif isinstance(obj, registry_pb2.Alias):
            self.aliases.get(obj.model_name, {}).pop(obj.alias, None)
        elif isinstance(obj, registry_pb2.Deployment):
            self.deployments.pop(obj.model_name, None)
        elif isinstance(obj, registry_pb2.ModelPolicy):
            self.policies.pop(obj.model_name, None)
        elif isinstance(obj, registry_pb2.Tenant):
            self.tenants.pop(obj.name, None)

    # -- reading --------------------------------------------------------------

    def snapshot_events(self, model_names: Iterable[str] = ()) -> list[registry_pb2.WatchResponse]:
        """RESET, a PUT for every object (optionally only some models), SYNCED."""
        wanted = set(model_names)
        rev = self.revision
        put = EventType.WATCH_EVENT_TYPE_PUT
        events = [registry_pb2.WatchResponse(type=EventType.WATCH_EVENT_TYPE_RESET, revision=rev)]
        if not wanted:
            for tenant in sorted(self.tenants):
                events.append(
                    registry_pb2.WatchResponse(type=put, revision=rev, tenant=self.tenants[tenant])
                )
        for name in sorted(self.models):
            if wanted and name not in wanted:
                continue
            events.append(
                registry_pb2.WatchResponse(type=put, revision=rev, model=self.models[name])
            )
            for number in sorted(self.versions.get(name, {})):
                events.append(
                    registry_pb2.WatchResponse(
                        type=put, revision=rev, version=self.versions[name][number]
                    )
                )
            for alias in sorted(self.aliases.get(name, {})):
                events.append(
                    registry_pb2.WatchResponse(
                        type=put, revision=rev, alias=self.aliases[name][alias]
                    )
                )
            if name in self.policies:
                events.append(
                    registry_pb2.WatchResponse(type=put, revision=rev, policy=self.policies[name])
                )
            if name in self.deployments:
                events.append(
                    registry_pb2.WatchResponse(
                        type=put, revision=rev, deployment=self.deployments[name]
                    )
                )
        events.append(
            registry_pb2.WatchResponse(type=EventType.WATCH_EVENT_TYPE_SYNCED, revision=rev)
        )
        return events

    def online_versions(self) -> dict[tuple[str, int], registry_pb2.ModelVersion]:
        """Every version in a route (any weight) or set as shadow."""
        online: dict[tuple[str, int], registry_pb2.ModelVersion] = {}
        for name, deployment in self.deployments.items():
            numbers = [route.version for route in deployment.routes]
            if deployment.shadow_version:
                numbers.append(deployment.shadow_version)
            for number in numbers:
                version = self.versions.get(name, {}).get(number)
                if version is not None:
                    online[(name, number)] = version
        return online


def event_model_name(event: registry_pb2.WatchResponse) -> str:
    """The model an event is about ('' for RESET/SYNCED and tenant records)."""
    kind = event.WhichOneof("object")
    if kind is None or kind == "tenant":
        return ""
    obj = getattr(event, kind)
    return obj.name if kind == "model" else obj.model_name


class RegistryView:
    """Local copy of the registry, kept current by the Watch stream."""

    def __init__(
        self,
        target: str,
        *,
        model_names: Sequence[str] = (),
        tracer_provider: TracerProvider | None = None,
        channel: grpc.aio.Channel | None = None,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        caller: Caller | None = None,
    ) -> None:
        self._target = target
        self._metadata = (caller or service_caller("registry-view")).metadata()
        self._model_names = list(model_names)
        self._tracer_provider = tracer_provider
        self._channel = channel
        self._owns_channel = channel is None
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._state = RegistryState()
        self._listeners: list[Listener] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: True while the stream is connected and past its SYNCED event.
        self.connected = False

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Begin watching in a background task; returns at once."""
        if self._task is not None:
            return
        if self._channel is None:
            self._channel = create_channel(self._target, tracer_provider=self._tracer_provider)
        self._task = asyncio.create_task(self._run(), name=f"registry-view:{self._target}")

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait for the first SYNCED (the view is complete up to a revision)."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
            self._channel = None

    # -- reading --------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The last applied revision."""
        return self._state.revision

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def model(self, name: str) -> registry_pb2.Model | None:
        return self._state.models.get(name)

    def models(self) -> list[registry_pb2.Model]:
        return [self._state.models[n] for n in sorted(self._state.models)]

    def version(self, name: str, version: int) -> registry_pb2.ModelVersion | None:
        return self._state.versions.get(name, {}).get(version)

    def versions(self, name: str) -> list[registry_pb2.ModelVersion]:
        """A model's versions, newest first."""
        table = self._state.versions.get(name, {})
        return [table[v] for v in sorted(table, reverse=True)]

    def deployment(self, name: str) -> registry_pb2.Deployment | None:
        """The model's deployment; None or empty routes means offline."""
        return self._state.deployments.get(name)

    def alias(self, name: str, alias: str) -> int | None:
        found = self._state.aliases.get(name, {}).get(alias)
        return None if found is None else found.version

    def aliases(self, name: str) -> dict[str, int]:
        return {a: obj.version for a, obj in self._state.aliases.get(name, {}).items()}

    def policy(self, name: str) -> registry_pb2.ModelPolicy | None:
        return self._state.policies.get(name)

    def tenant(self, name: str) -> registry_pb2.Tenant | None:
        """The tenant's record; None = no record (enabled, default quotas)."""
        return self._state.tenants.get(name)

    def online_versions(self) -> dict[tuple[str, int], registry_pb2.ModelVersion]:
        """Versions in a route (any weight) or set as shadow, by (model, version)."""
        return self._state.online_versions()

    def add_listener(self, callback: Listener) -> None:
        """Call `callback(event)` after each event is applied (also RESET/SYNCED)."""
        self._listeners.append(callback)

    # -- the watch loop -------------------------------------------------------

    async def _run(self) -> None:
        backoff = self._min_backoff
        while True:
            try:
                applied = await self._watch_once()
                if applied:
                    backoff = self._min_backoff
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                log.warning(
                    "registry watch on %s ended: %s %s",
                    self._target,
                    error.code().name,
                    error.details(),
                )
            except Exception:
                log.exception("registry watch on %s failed", self._target)
            self.connected = False
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(self._max_backoff, backoff * 2)

    async def _watch_once(self) -> bool:
        """One Watch call; True if it applied anything."""
        assert self._channel is not None
        stub = registry_pb2_grpc.ModelRegistryServiceStub(self._channel)
        request = registry_pb2.WatchRequest(
            from_revision=self._state.revision, model_names=self._model_names
        )
        pending: RegistryState | None = None
        buffered: list[registry_pb2.WatchResponse] = []
        applied = False
        async for event in stub.Watch(request, metadata=self._metadata):
            applied = True
            if event.type == EventType.WATCH_EVENT_TYPE_RESET:
                pending, buffered = RegistryState(), [event]
                pending.revision = event.revision
                continue
            if pending is not None:
                buffered.append(event)
                pending.apply(event)
                if event.type == EventType.WATCH_EVENT_TYPE_SYNCED:
                    self._state, pending = pending, None
                    self._mark_synced()
                    for item in buffered:
                        await self._notify(item)
                    buffered = []
                continue
            self._state.apply(event)
            if event.type == EventType.WATCH_EVENT_TYPE_SYNCED:
                self._mark_synced()
            await self._notify(event)
        return applied

    def _mark_synced(self) -> None:
        self.connected = True
        self._synced.set()

    async def _notify(self, event: registry_pb2.WatchResponse) -> None:
        for callback in list(self._listeners):
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("registry view listener failed")
