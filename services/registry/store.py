"""SQLite persistence for the registry: one writer connection on one thread.

Every change is a list of Watch events under one new global revision. The
store turns those events into row upserts/deletes, appends them to the
retained event log, appends deployment history, and bumps the revision, all
in ONE transaction; the in-memory state applies the very same events, so
disk and memory cannot disagree about what a change means.

SQLite calls block, so they run on a dedicated single thread (`Database`)
and the event loop only awaits them; each call is a traced span.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import Message
from opentelemetry import trace
from prometheus_client import Histogram

from lattice.v1 import registry_pb2
from services.registry.migrations import MigrationContext, migrate
from services.runtime.registry_view import RegistryState

T = TypeVar("T")
EventType = registry_pb2.WatchEventType

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
_TABLES = {
    "model": ("models", ("name",)),
    "version": ("versions", ("model_name", "version")),
    "alias": ("aliases", ("model_name", "alias")),
    "deployment": ("deployments", ("model_name",)),
    "policy": ("policies", ("model_name",)),
    "tenant": ("tenants", ("name",)),
}
_MESSAGES: dict[str, type[Message]] = {
    "models": registry_pb2.Model,
    "versions": registry_pb2.ModelVersion,
    "aliases": registry_pb2.Alias,
    "deployments": registry_pb2.Deployment,
    "policies": registry_pb2.ModelPolicy,
    "tenants": registry_pb2.Tenant,
}


@dataclasses.dataclass(frozen=True)
class ArtifactRow:
    digest: str
    size_bytes: int
    content_type: str


@dataclasses.dataclass
class Loaded:
    """What the store holds at start-up."""

    state: RegistryState
    #: Retained events, oldest first, grouped by revision.
    log: list[tuple[int, list[registry_pb2.WatchResponse]]]
    artifact_bytes: int


class SqliteStore:
    """Synchronous access to the registry database (use from one thread)."""

    def __init__(
        self, path: Path, *, synchronous: str = "FULL", default_tenant: str = "default"
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_LEVELS:
            raise ValueError(f"sqlite synchronous must be one of {SYNCHRONOUS_LEVELS}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self.conn.execute("PRAGMA foreign_keys=ON")
        migrate(self.conn, MigrationContext(default_tenant=default_tenant))

    def close(self) -> None:
        self.conn.close()

    def journal_mode(self) -> str:
        return self.conn.execute("PRAGMA journal_mode").fetchone()[0]

    # -- loading -------------------------------------------------------------

    def load(self) -> Loaded:
        state = RegistryState()
        state.revision = self.conn.execute(
            "SELECT value FROM meta WHERE key='revision'"
        ).fetchone()[0]
        for table, message in _MESSAGES.items():
            for (body,) in self.conn.execute(f"SELECT body FROM {table}"):
                state.put(message.FromString(body))
        log: list[tuple[int, list[registry_pb2.WatchResponse]]] = []
        for revision, body in self.conn.execute(
            "SELECT revision, body FROM events ORDER BY revision, seq"
        ):
            if not log or log[-1][0] != revision:
                log.append((revision, []))
            log[-1][1].append(registry_pb2.WatchResponse.FromString(body))
        total = self.conn.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM artifacts")
        return Loaded(state, log, total.fetchone()[0])

    # -- writing ---------------------------------------------------------------

    def commit(
        self,
        revision: int,
        events: Sequence[registry_pb2.WatchResponse],
        history: Sequence[registry_pb2.DeploymentHistoryEntry] = (),
        *,
        retain_revisions: int,
    ) -> None:
        """Persist one change (its events, history and new revision) atomically."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("SELECT value FROM meta WHERE key='revision'").fetchone()[0]
            if revision != current + 1:
                raise RuntimeError(f"revision {revision} does not follow {current}")
            for seq, event in enumerate(events):
                self._apply_rows(event)
                conn.execute(
                    "INSERT INTO events (revision, seq, body) VALUES (?, ?, ?)",
                    (revision, seq, event.SerializeToString()),
                )
            for entry in history:
                conn.execute(
                    "INSERT INTO deployment_history (revision, model_name, tenant, body) "
                    "VALUES (?, ?, ?, ?)",
                    (entry.revision, entry.model_name, entry.tenant, entry.SerializeToString()),
                )
            conn.execute("UPDATE meta SET value=? WHERE key='revision'", (revision,))
            conn.execute("DELETE FROM events WHERE revision <= ?", (revision - retain_revisions,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _apply_rows(self, event: registry_pb2.WatchResponse) -> None:
        kind = event.WhichOneof("object")
        if kind is None:
            return
        obj = getattr(event, kind)
        table, keys = _TABLES[kind]
        values = [getattr(obj, key) for key in keys]
        if event.type == EventType.WATCH_EVENT_TYPE_PUT:
            columns = ", ".join((*keys, "body"))
            marks = ", ".join("?" * (len(keys) + 1))
            self.conn.execute(
                f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({marks})",
                (*values, obj.SerializeToString()),
            )
        elif event.type == EventType.WATCH_EVENT_TYPE_DELETE:
            if kind == "model":
                for other in ("versions", "aliases", "deployments", "policies"):
                    self.conn.execute(f"DELETE FROM {other} WHERE model_name=?", values)
            where = " AND ".join(f"{key}=?" for key in keys)
            self.conn.execute(f"DELETE FROM {table} WHERE {where}", values)

    # -- history and artifacts -------------------------------------------------

    def history(
        self, model_name: str, before_revision: int, limit: int, tenant: str | None = None
    ) -> list[registry_pb2.DeploymentHistoryEntry]:
        """Entries newest first, with revision < before_revision (0 = from the newest).

        `tenant` limits them to that tenant's models (None = every tenant's).
        """
        bound = before_revision if before_revision > 0 else 2**62
        where: list[str] = ["revision<?"]
        params: list[object] = [bound]
        if model_name:
            where.append("model_name=?")
            params.append(model_name)
        if tenant is not None:
            where.append("tenant=?")
            params.append(tenant)
        rows = self.conn.execute(
            f"SELECT body FROM deployment_history WHERE {' AND '.join(where)} "
            "ORDER BY revision DESC LIMIT ?",
            (*params, limit),
        )
        return [registry_pb2.DeploymentHistoryEntry.FromString(body) for (body,) in rows]

    def record_artifact(self, digest: str, size_bytes: int, content_type: str, tenant: str) -> bool:
        """Remember an artifact and that `tenant` uploaded it; False if it was already known."""
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO artifacts (digest, size_bytes, content_type, create_time) "
            "VALUES (?, ?, ?, ?)",
            (digest, size_bytes, content_type, time.time()),
        )
        self.conn.execute(
            "INSERT OR IGNORE INTO artifact_owners (digest, tenant) VALUES (?, ?)", (digest, tenant)
        )
        return cursor.rowcount == 1

    def artifact_uploaded_by(self, digest: str, tenant: str) -> bool:
        """Whether `tenant` uploaded these bytes (uploads by others do not count)."""
        row = self.conn.execute(
            "SELECT 1 FROM artifact_owners WHERE digest=? AND tenant=?", (digest, tenant)
        ).fetchone()
        return row is not None

    def artifact(self, digest: str) -> ArtifactRow | None:
        row = self.conn.execute(
            "SELECT digest, size_bytes, content_type FROM artifacts WHERE digest=?", (digest,)
        ).fetchone()
        return None if row is None else ArtifactRow(*row)


class Database:
    """Runs `SqliteStore` calls on one dedicated thread, each in a traced span."""

    def __init__(
        self,
        store_factory: Callable[[], SqliteStore],
        *,
        tracer: trace.Tracer,
        duration: Histogram | None = None,
    ) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="registry-db"
        )
        self._factory = store_factory
        self._tracer = tracer
        self._duration = duration
        self.store: SqliteStore | None = None

    async def open(self) -> SqliteStore:
        self.store = await self._run_raw(self._factory)
        return self.store

    async def call(self, operation: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(store, *args)` on the database thread as span `registry.db <operation>`."""
        store = self.store
        assert store is not None, "Database.open() first"
        with self._tracer.start_as_current_span(
            f"registry.db {operation}",
            kind=trace.SpanKind.CLIENT,
            attributes={"db.system": "sqlite", "db.operation": operation},
        ):
            started = time.perf_counter()
            try:
                return await self._run_raw(lambda: fn(store, *args, **kwargs))
            finally:
                if self._duration is not None:
                    self._duration.labels(operation).observe(time.perf_counter() - started)

    async def _run_raw(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    async def close(self) -> None:
        if self.store is not None:
            await self._run_raw(self.store.close)
            self.store = None
        self._executor.shutdown(wait=True)
