"""The registry's domain logic, free of gRPC: tests drive it directly.

Reads are served from the in-memory `RegistryState`, which always equals
the database as of the last commit. Writes take one lock, validate against
that state, then commit one transaction (a new global revision, its events,
any history) on the database thread, and only then apply the same events
to memory and publish them to Watch subscribers. A commit runs in its own
task, so a client that goes away mid-write cannot leave memory behind disk.

Every call names its `Caller`. A model belongs to the tenant that created it
and so do its versions, aliases, deployment, policy and history; another
tenant's objects are NOT_FOUND and missing from listings, admins see all
(see `ownership`). Model names stay one global namespace (inference routes
by name), so creating a name another tenant holds is ALREADY_EXISTS with the
same words as for one's own, naming no owner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import cast

from google.protobuf import timestamp_pb2

from lattice.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from lattice.refs import parse_model_ref
from lattice.v1 import registry_pb2
from services.registry import tenants as tenancy
from services.registry import validation as check
from services.registry.artifacts import ArtifactStore, digest_from_reference
from services.registry.metrics import RegistryMetrics
from services.registry.ownership import owner_for_create, references_artifact
from services.registry.store import Database, SqliteStore
from services.registry.watch import WatchHub
from services.runtime.identity import Caller
from services.runtime.registry_view import RegistryState
from services.runtime.remote_targets import RemoteAllowlist

EventType = registry_pb2.WatchEventType
PUT = EventType.WATCH_EVENT_TYPE_PUT
DELETE = EventType.WATCH_EVENT_TYPE_DELETE


@dataclasses.dataclass
class Change:
    """What one write produces: events (and history) under one revision."""

    events: list[registry_pb2.WatchResponse] = dataclasses.field(default_factory=list)
    history: list[registry_pb2.DeploymentHistoryEntry] = dataclasses.field(default_factory=list)

    def put(self, revision: int, **obj) -> None:
        self.events.append(registry_pb2.WatchResponse(type=PUT, revision=revision, **obj))

    def delete(self, revision: int, **obj) -> None:
        self.events.append(registry_pb2.WatchResponse(type=DELETE, revision=revision, **obj))


@dataclasses.dataclass(frozen=True)
class Resolved:
    model_name: str
    version: registry_pb2.ModelVersion | None
    deployment: registry_pb2.Deployment
    policy: registry_pb2.ModelPolicy


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(time.time_ns())
    return stamp


class Registry:
    """Models, versions, artifacts, aliases, deployments, policy and Watch."""

    def __init__(
        self,
        db: Database,
        artifacts: ArtifactStore,
        metrics: RegistryMetrics,
        *,
        watch_retain_revisions: int = 10_000,
        watch_queue_size: int = 1024,
        remote_allowlist: RemoteAllowlist | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._remote = remote_allowlist or RemoteAllowlist(())
        self._db = db
        self._artifacts = artifacts
        self._metrics = metrics
        self._retain = watch_retain_revisions
        self._clock = clock
        self._state = RegistryState()
        # (model, version, replica) -> the last load report recorded (loaded, reason)
        self._load_reports: dict[tuple[str, int, str], tuple[bool, str]] = {}
        self._lock = asyncio.Lock()
        self._commits: set[asyncio.Task] = set()
        self.hub = WatchHub(
            lambda: self._state,
            retain_revisions=watch_retain_revisions,
            queue_size=watch_queue_size,
            subscribers_gauge=metrics.watch_subscribers,
            resets=metrics.watch_resets,
        )

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Open the database (migrating it) and load the state and replay log."""
        await asyncio.to_thread(self._artifacts.prepare)
        await self._db.open()
        loaded = await self._db.call("load", SqliteStore.load)
        self._state = loaded.state
        self.hub.load(loaded.state.revision, loaded.log)
        self._metrics.revision.set(loaded.state.revision)
        self._metrics.artifact_bytes.set(loaded.artifact_bytes)

    async def close(self) -> None:
        self.hub.close()
        if self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        await self._db.close()

    @property
    def state(self) -> RegistryState:
        return self._state

    @property
    def revision(self) -> int:
        return self._state.revision

    # -- the one write path ------------------------------------------------------

    async def _write(
        self, operation: str, build: Callable[[int], Change]
    ) -> list[registry_pb2.WatchResponse]:
        """Validate, commit and publish one change in a task the caller cannot cancel."""
        task = asyncio.create_task(self._locked_write(operation, build))
        self._commits.add(task)
        task.add_done_callback(self._write_done)
        return await asyncio.shield(task)

    def _write_done(self, task: asyncio.Task) -> None:
        self._commits.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller may be gone

    async def _locked_write(
        self, operation: str, build: Callable[[int], Change]
    ) -> list[registry_pb2.WatchResponse]:
        async with self._lock:
            revision = self._state.revision + 1
            change = build(revision)  # validates against the current state; may raise
            await self._db.call(
                operation,
                SqliteStore.commit,
                revision,
                change.events,
                change.history,
                retain_revisions=self._retain,
            )
            for event in change.events:
                self._state.apply(event)
            self._state.revision = revision
            self._metrics.revision.set(revision)
            self.hub.publish(revision, change.events)
            return change.events

    # -- lookups ---------------------------------------------------------------------

    def _model(self, caller: Caller, name: str, field: str = "name") -> registry_pb2.Model:
        """The model if it exists for this caller; another tenant's is NOT_FOUND."""
        check.name(name, field)
        found = self._state.models.get(name)
        if found is None or not caller.may_see(found.tenant):
            raise NotFound(f"model {name!r} not found")
        return found

    def _version(self, name: str, number: int, field: str = "version") -> registry_pb2.ModelVersion:
        """A version of a model the caller already passed `_model` for."""
        check.version_number(number, field)
        found = self._state.versions.get(name, {}).get(number)
        if found is None:
            raise NotFound(f"version {number} of model {name!r} not found")
        return found

    def _tenant_of(self, name: str) -> str:
        model = self._state.models.get(name)
        return model.tenant if model is not None else ""

    def _deployment(self, name: str) -> registry_pb2.Deployment:
        found = self._state.deployments.get(name)
        return found or registry_pb2.Deployment(model_name=name, tenant=self._tenant_of(name))

    def _policy(self, name: str) -> registry_pb2.ModelPolicy:
        found = self._state.policies.get(name)
        return found or registry_pb2.ModelPolicy(model_name=name, tenant=self._tenant_of(name))

    # -- models --------------------------------------------------------------------------

    async def create_model(self, caller: Caller, model: registry_pb2.Model) -> registry_pb2.Model:
        check.model(model)
        if caller.admin and model.tenant:
            check.text(model.tenant, "model.tenant", 256)
        owner = owner_for_create(caller, model.tenant)

        def build(revision: int) -> Change:
            if model.name in self._state.models:
                # The same words whoever holds the name: no owner is revealed.
                raise AlreadyExists(f"model name {model.name!r} is taken; choose another")
            created = registry_pb2.Model(
                tenant=owner,
                name=model.name,
                task=model.task,
                description=model.description,
                labels=model.labels,
                create_time=_now(),
                latest_version=0,
            )
            change = Change()
            change.put(revision, model=created)
            return change

        events = await self._write("create_model", build)
        return events[0].model

    def get_model(self, caller: Caller, name: str) -> registry_pb2.Model:
        return self._model(caller, name)

    def _visible_names(self, caller: Caller, after: object) -> list[str]:
        return sorted(
            name
            for name, model in self._state.models.items()
            if caller.may_see(model.tenant) and (after is None or name > str(after))
        )

    def list_models(self, caller: Caller, page_size: int, page_token: str) -> tuple[list, str]:
        size = check.page_size(page_size)
        after = check.decode_page_token(page_token, "models")
        names = self._visible_names(caller, after)
        page = names[:size]
        token = check.encode_page_token("models", page[-1]) if len(names) > size else ""
        return [self._state.models[n] for n in page], token

    async def delete_model(self, caller: Caller, name: str) -> None:
        self._model(caller, name)

        def build(revision: int) -> Change:
            model = self._model(caller, name)
            deployment = self._deployment(name)
            if deployment.routes or deployment.shadow_version:
                raise FailedPrecondition(
                    f"model {name!r} is online; take it offline (UpdateDeployment with no "
                    "routes) before deleting it"
                )
            change = Change()
            change.delete(revision, model=model)
            return change

        await self._write("delete_model", build)

    # -- versions --------------------------------------------------------------------------

    async def create_version(
        self, caller: Caller, request: registry_pb2.CreateVersionRequest
    ) -> registry_pb2.ModelVersion:
        check.create_version(request)
        self._model(caller, request.model_name, "model_name")
        self._remote.check_version(request.artifact_uri, request.params, request.tags)
        size_bytes = 0
        digest = request.artifact_digest
        if request.artifact_uri.startswith("lattice-artifact://"):
            stored = digest_from_reference(request.artifact_uri, "artifact_uri")
            if stored != digest:
                raise InvalidArgument(
                    "artifact_digest", "does not match the digest in artifact_uri"
                )
            if not self._artifacts.exists(stored) or not await self.may_use_artifact(
                caller, stored
            ):
                raise NotFound(f"artifact sha256:{stored} is not stored; upload it first")
            size_bytes = self._artifacts.size(stored)

        def build(revision: int) -> Change:
            model = self._model(caller, request.model_name, "model_name")
            lineage = request.lineage
            if lineage.base_version:
                base_model = lineage.base_model_name or request.model_name
                base = self._state.models.get(base_model)
                if (
                    base is None
                    or not caller.may_see(base.tenant)
                    or lineage.base_version not in self._state.versions.get(base_model, {})
                ):
                    raise NotFound(
                        f"lineage.base_version: version {lineage.base_version} of model "
                        f"{base_model!r} not found"
                    )
            number = model.latest_version + 1
            version = registry_pb2.ModelVersion(
                tenant=model.tenant,
                model_name=model.name,
                version=number,
                artifact_uri=request.artifact_uri,
                artifact_digest=digest,
                format=request.format,
                lineage=lineage,
                metrics=request.metrics,
                params=request.params,
                tags=request.tags,
                create_time=_now(),
                status=registry_pb2.VERSION_STATUS_READY,
                artifact_size_bytes=size_bytes,
                description=request.description,
            )
            updated = registry_pb2.Model()
            updated.CopyFrom(model)
            updated.latest_version = number
            change = Change()
            change.put(revision, version=version)
            change.put(revision, model=updated)
            return change

        events = await self._write("create_version", build)
        return events[0].version

    async def may_use_artifact(self, caller: Caller, digest: str) -> bool:
        """Admins, tenants who uploaded the bytes, or whose versions point at them."""
        if caller.admin or references_artifact(self._state, caller, digest):
            return True
        return await self._db.call(
            "artifact_owner", SqliteStore.artifact_uploaded_by, digest, caller.tenant
        )

    def get_version(self, caller: Caller, name: str, number: int) -> registry_pb2.ModelVersion:
        self._model(caller, name, "model_name")
        return self._version(name, number)

    def list_versions(
        self, caller: Caller, name: str, page_size: int, page_token: str
    ) -> tuple[list, str]:
        self._model(caller, name, "model_name")
        size = check.page_size(page_size)
        after = check.decode_page_token(page_token, f"versions:{name}")
        if after is not None and not isinstance(after, int):
            raise InvalidArgument("page_token", "not a token this listing returned")
        table = self._state.versions.get(name, {})
        numbers = sorted((n for n in table if after is None or n < after), reverse=True)
        page = numbers[:size]
        more = len(numbers) > size
        token = check.encode_page_token(f"versions:{name}", page[-1]) if more else ""
        return [table[n] for n in page], token

    async def update_version_status(
        self, caller: Caller, name: str, number: int, status: int
    ) -> registry_pb2.ModelVersion:
        check.name(name, "model_name")
        check.version_number(number, "version")
        check.enum_value(status, registry_pb2.VersionStatus, "status")

        def build(revision: int) -> Change:
            self._model(caller, name, "model_name")
            current = self._version(name, number)
            online = self._state.online_versions()
            if status == registry_pb2.VERSION_STATUS_ARCHIVED and (name, number) in online:
                raise FailedPrecondition(
                    f"version {number} of model {name!r} is online; take it out of the "
                    "deployment before archiving it"
                )
            updated = registry_pb2.ModelVersion()
            updated.CopyFrom(current)
            updated.status = cast(registry_pb2.VersionStatus, status)
            change = Change()
            change.put(revision, version=updated)
            return change

        events = await self._write("update_version_status", build)
        return events[0].version

    # -- aliases -------------------------------------------------------------------------------

    async def set_alias(
        self, caller: Caller, model_name: str, alias: str, version: int, expected_revision: int
    ) -> registry_pb2.Alias:
        check.name(model_name, "model_name")
        check.alias_name(alias, "alias")
        check.version_number(version, "version")
        check.expected_revision(expected_revision)

        def build(revision: int) -> Change:
            model = self._model(caller, model_name, "model_name")
            self._version(model_name, version)
            current = self._state.aliases.get(model_name, {}).get(alias)
            self._check_revision(
                expected_revision, current.revision if current else 0, f"alias {model_name}@{alias}"
            )
            change = Change()
            change.put(
                revision,
                alias=registry_pb2.Alias(
                    model_name=model_name,
                    alias=alias,
                    version=version,
                    revision=revision,
                    tenant=model.tenant,
                ),
            )
            return change

        events = await self._write("set_alias", build)
        return events[0].alias

    async def delete_alias(
        self, caller: Caller, model_name: str, alias: str, expected_revision: int
    ) -> None:
        check.name(model_name, "model_name")
        check.alias_name(alias, "alias")
        check.expected_revision(expected_revision)

        def build(revision: int) -> Change:
            self._model(caller, model_name, "model_name")
            current = self._state.aliases.get(model_name, {}).get(alias)
            if current is None:
                raise NotFound(f"alias {model_name}@{alias} not found")
            self._check_revision(expected_revision, current.revision, f"alias {model_name}@{alias}")
            change = Change()
            change.delete(revision, alias=current)
            return change

        await self._write("delete_alias", build)

    def list_aliases(self, caller: Caller, model_name: str) -> list[registry_pb2.Alias]:
        self._model(caller, model_name, "model_name")
        table = self._state.aliases.get(model_name, {})
        return [table[a] for a in sorted(table)]

    def resolve(self, caller: Caller, reference: str) -> Resolved:
        ref = parse_model_ref(reference, "model")
        self._model(caller, ref.name, "model")
        version = None
        if ref.alias:
            target = self._state.aliases.get(ref.name, {}).get(ref.alias)
            if target is None:
                raise NotFound(f"alias {ref.name}@{ref.alias} not found")
            version = self._version(ref.name, target.version)
        elif ref.version:
            version = self._version(ref.name, ref.version, "model")
        return Resolved(ref.name, version, self._deployment(ref.name), self._policy(ref.name))

    # -- deployments -------------------------------------------------------------------------

    def get_deployment(self, caller: Caller, model_name: str) -> registry_pb2.Deployment:
        self._model(caller, model_name, "model_name")
        return self._deployment(model_name)

    def list_deployments(self, caller: Caller, page_size: int, page_token: str) -> tuple[list, str]:
        size = check.page_size(page_size)
        after = check.decode_page_token(page_token, "deployments")
        names = self._visible_names(caller, after)
        page = names[:size]
        token = check.encode_page_token("deployments", page[-1]) if len(names) > size else ""
        return [self._deployment(n) for n in page], token

    async def update_deployment(
        self, caller: Caller, request: registry_pb2.UpdateDeploymentRequest
    ) -> registry_pb2.Deployment:
        check.name(request.model_name, "model_name")
        check.routes(request)
        name = request.model_name
        actor = caller.subject

        def build(revision: int) -> Change:
            model = self._model(caller, name, "model_name")
            for index, route in enumerate(request.routes):
                self._deployable(name, route.version, f"routes[{index}].version")
            if request.shadow_version:
                self._deployable(name, request.shadow_version, "shadow_version")
            before = self._deployment(name)
            self._check_revision(
                request.expected_revision, before.revision, f"deployment of {name!r}"
            )
            going_offline = not request.routes and not request.shadow_version
            if not going_offline and not _is_rollback(before, request):
                self._check_rollout_interval(name, before)
            after = registry_pb2.Deployment(
                model_name=name,
                routes=request.routes,
                shadow_version=request.shadow_version,
                revision=revision,
                update_time=_now(),
                updated_by=actor,
                tenant=model.tenant,
            )
            change = Change()
            change.put(revision, deployment=after)
            change.history.append(
                registry_pb2.DeploymentHistoryEntry(
                    revision=revision,
                    model_name=name,
                    from_deployment=before,
                    to_deployment=after,
                    actor=actor,
                    reason=request.reason,
                    time=after.update_time,
                    tenant=model.tenant,
                    kind=registry_pb2.DEPLOYMENT_EVENT_KIND_CHANGE,
                )
            )
            return change

        events = await self._write("update_deployment", build)
        return events[0].deployment

    async def report_version_load(
        self, caller: Caller, request: registry_pb2.ReportVersionLoadRequest
    ) -> registry_pb2.DeploymentHistoryEntry | None:
        """Record a replica's load failure (or recovery) in the model's history.

        Only suite services report (admin). A report equal to the same replica's
        last one records nothing (a failing load is retried with backoff), so the
        history shows each change of a version's fate once per replica. Returns
        the entry recorded, or None.
        """
        if not caller.admin:
            raise PermissionDenied("only suite services report version loads")
        check.load_report(request)
        name, number = request.model_name, request.version
        key = (name, number, request.replica)
        reported = (request.loaded, request.reason)
        recorded: list[registry_pb2.DeploymentHistoryEntry] = []

        def build(revision: int) -> Change:
            model = self._model(caller, name, "model_name")
            self._version(name, number)
            deployment = self._deployment(name)
            entry = registry_pb2.DeploymentHistoryEntry(
                revision=revision,
                model_name=name,
                from_deployment=deployment,
                to_deployment=deployment,
                actor=caller.subject,
                reason=_load_event_reason(request),
                time=_now(),
                tenant=model.tenant,
                kind=registry_pb2.DEPLOYMENT_EVENT_KIND_VERSION_LOADED
                if request.loaded
                else registry_pb2.DEPLOYMENT_EVENT_KIND_VERSION_LOAD_FAILED,
                version=number,
                replica=request.replica,
            )
            recorded.append(entry)
            change = Change()
            change.history.append(entry)
            return change

        if self._load_reports.get(key) == reported:
            self._model(caller, name, "model_name")
            self._version(name, number)
            return None
        await self._write("report_version_load", build)
        self._load_reports[key] = reported
        return recorded[0]

    def _deployable(self, name: str, number: int, field: str) -> None:
        version = self._state.versions.get(name, {}).get(number)
        if version is None:
            raise NotFound(f"{field}: version {number} of model {name!r} not found")
        if version.status != registry_pb2.VERSION_STATUS_READY:
            raise FailedPrecondition(
                f"{field}: version {number} of model {name!r} is "
                f"{registry_pb2.VersionStatus.Name(version.status)}, not READY"
            )

    def _check_rollout_interval(self, name: str, before: registry_pb2.Deployment) -> None:
        policy = self._state.policies.get(name)
        if policy is None or not policy.HasField("min_rollout_interval") or not before.revision:
            return
        interval = policy.min_rollout_interval.ToTimedelta().total_seconds()
        last = before.update_time.ToNanoseconds() / 1e9
        allowed_at = last + interval
        now = self._clock()
        if now < allowed_at:
            when = dt.datetime.fromtimestamp(allowed_at, dt.UTC).isoformat(timespec="seconds")
            raise FailedPrecondition(
                f"model {name!r} allows one rollout every {interval:g}s; the last was "
                f"{now - last:.1f}s ago, next allowed at {when}",
                retry_after=allowed_at - now,
            )

    async def list_history(
        self, caller: Caller, model_name: str, page_size: int, page_token: str
    ) -> tuple[list, str]:
        if model_name:
            check.name(model_name, "model_name")
        size = check.page_size(page_size)
        after = check.decode_page_token(page_token, f"history:{model_name}")
        if after is not None and (not isinstance(after, int) or after < 1):
            raise InvalidArgument("page_token", "not a token this listing returned")
        entries = await self._db.call(
            "list_history",
            SqliteStore.history,
            model_name,
            after or 0,
            size + 1,
            None if caller.admin else caller.tenant,
        )
        more = len(entries) > size
        entries = entries[:size]
        token = (
            check.encode_page_token(f"history:{model_name}", entries[-1].revision) if more else ""
        )
        return entries, token

    # -- policy ------------------------------------------------------------------------------

    def get_policy(self, caller: Caller, model_name: str) -> registry_pb2.ModelPolicy:
        self._model(caller, model_name, "model_name")
        return self._policy(model_name)

    async def set_policy(
        self, caller: Caller, policy: registry_pb2.ModelPolicy, expected_revision: int
    ) -> registry_pb2.ModelPolicy:
        check.policy(policy)
        check.expected_revision(expected_revision)
        name = policy.model_name

        def build(revision: int) -> Change:
            model = self._model(caller, name, "policy.model_name")
            self._check_revision(
                expected_revision, self._policy(name).revision, f"policy of {name!r}"
            )
            stored = registry_pb2.ModelPolicy()
            stored.CopyFrom(policy)
            del stored.allowed_tenants[:]
            stored.allowed_tenants.extend(sorted(set(policy.allowed_tenants)))
            stored.revision = revision
            stored.tenant = model.tenant
            change = Change()
            change.put(revision, policy=stored)
            return change

        events = await self._write("set_policy", build)
        return events[0].policy

    # -- tenants -----------------------------------------------------------------------------

    async def create_tenant(
        self, caller: Caller, tenant: registry_pb2.Tenant
    ) -> registry_pb2.Tenant:
        tenancy.require_admin(caller, "create tenants")
        tenancy.tenant(tenant)

        def build(revision: int) -> Change:
            if tenant.name in self._state.tenants:
                raise AlreadyExists(f"tenant {tenant.name!r} already exists")
            change = Change()
            change.put(revision, tenant=tenancy.stored(tenant, revision, caller))
            return change

        events = await self._write("create_tenant", build)
        return events[0].tenant

    def get_tenant(self, caller: Caller, name: str) -> registry_pb2.Tenant:
        tenancy.tenant_name(name, "name")
        return tenancy.visible(caller, self._state.tenants.get(name), name)

    def list_tenants(self, caller: Caller, page_size: int, page_token: str) -> tuple[list, str]:
        size = check.page_size(page_size)
        after = check.decode_page_token(page_token, "tenants")
        names = sorted(
            name
            for name in self._state.tenants
            if caller.may_see(name) and (after is None or name > str(after))
        )
        page = names[:size]
        token = check.encode_page_token("tenants", page[-1]) if len(names) > size else ""
        return [self._state.tenants[n] for n in page], token

    async def update_tenant(
        self, caller: Caller, tenant: registry_pb2.Tenant, expected_revision: int
    ) -> registry_pb2.Tenant:
        tenancy.require_admin(caller, "change tenants")
        tenancy.tenant(tenant)
        check.expected_revision(expected_revision)

        def build(revision: int) -> Change:
            current = tenancy.visible(caller, self._state.tenants.get(tenant.name), tenant.name)
            self._check_revision(expected_revision, current.revision, f"tenant {tenant.name!r}")
            change = Change()
            change.put(revision, tenant=tenancy.stored(tenant, revision, caller))
            return change

        events = await self._write("update_tenant", build)
        return events[0].tenant

    # -- watch -------------------------------------------------------------------------------

    def watch(
        self, caller: Caller, from_revision: int, model_names: Sequence[str]
    ) -> AsyncIterator[registry_pb2.WatchResponse]:
        """Changes the caller may see: its tenant's objects, or everything for admins."""
        if from_revision < 0:
            raise InvalidArgument("from_revision", "must be >= 0 (0 = full snapshot)")
        if len(model_names) > 1000:
            raise InvalidArgument("model_names", "at most 1000 names")
        for index, name in enumerate(model_names):
            check.name(name, f"model_names[{index}]")
        return self.hub.subscribe(from_revision, model_names, caller)

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _check_revision(expected: int, actual: int, what: str) -> None:
        if expected and expected != actual:
            raise Aborted(
                f"{what} is at revision {actual}, not the expected {expected}; re-read it and retry"
            )


def _load_event_reason(request: registry_pb2.ReportVersionLoadRequest) -> str:
    """The history entry's reason: what happened, where, and why."""
    where = f" on {request.replica}" if request.replica else ""
    if request.loaded:
        said = f"version {request.version} loaded{where}"
    else:
        said = f"version {request.version} failed to load{where}"
    if request.reason:
        said = f"{said}: {request.reason}"
    return said[: check.MAX_REASON]


def _is_rollback(
    before: registry_pb2.Deployment, request: registry_pb2.UpdateDeploymentRequest
) -> bool:
    """Traffic only taken away: every version routed after was routed before, and at
    least one no longer is (a failed canary pulled). Like going offline, a rollback
    is a brake, so the policy's rollout interval does not hold it back."""
    old = {r.version for r in before.routes if r.weight > 0}
    new = {r.version for r in request.routes if r.weight > 0}
    shadow_kept = request.shadow_version in (0, before.shadow_version)
    return bool(new) and new < old and shadow_kept
