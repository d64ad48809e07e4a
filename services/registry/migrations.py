"""Versioned schema migrations for the registry's SQLite database.

`PRAGMA user_version` holds the schema version. Each migration runs once, in
its own transaction together with the version bump, so a crash leaves the
database at the old or the new version, never in between. A database newer
than this code is refused rather than guessed at.

A migration is either a SQL script or a function of the connection and the
`MigrationContext` (for changes that rewrite stored protos, such as giving
every existing object an owning tenant).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable

from google.protobuf.message import Message

from lattice.tokens import LEGACY_SYSTEM_TENANTS, SYSTEM_TENANT
from lattice.v1 import registry_pb2


@dataclasses.dataclass(frozen=True)
class MigrationContext:
    #: The tenant that owns every object stored before objects had owners.
    default_tenant: str = "default"


#: Tables whose rows are one serialized proto each, with the message type.
_BODIES: dict[str, type[Message]] = {
    "models": registry_pb2.Model,
    "versions": registry_pb2.ModelVersion,
    "aliases": registry_pb2.Alias,
    "deployments": registry_pb2.Deployment,
    "policies": registry_pb2.ModelPolicy,
    "deployment_history": registry_pb2.DeploymentHistoryEntry,
}


def _own_everything(conn: sqlite3.Connection, context: MigrationContext) -> None:
    """2: every object gets an owning tenant; ownerless rows go to the default tenant.

    History gets a tenant column so a tenant's listing filters in SQL; the
    retained Watch log is rewritten too, so a replay carries owners like a
    snapshot does. Artifacts remember which tenants uploaded them.
    """
    conn.execute("ALTER TABLE deployment_history ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
    conn.execute(
        "CREATE TABLE artifact_owners (digest TEXT NOT NULL, tenant TEXT NOT NULL, "
        "PRIMARY KEY (digest, tenant))"
    )
    conn.execute(
        "INSERT INTO artifact_owners (digest, tenant) SELECT digest, ? FROM artifacts",
        (context.default_tenant,),
    )
    for table, message in _BODIES.items():
        rows = conn.execute(f"SELECT rowid, body FROM {table}").fetchall()
        for rowid, body in rows:
            obj = message.FromString(body)
            if not obj.tenant:  # type: ignore[attr-defined]
                obj.tenant = context.default_tenant  # type: ignore[attr-defined]
            conn.execute(
                f"UPDATE {table} SET body=? WHERE rowid=?", (obj.SerializeToString(), rowid)
            )
    conn.execute("UPDATE deployment_history SET tenant=?", (context.default_tenant,))
    rows = conn.execute("SELECT rowid, body FROM events").fetchall()
    for rowid, body in rows:
        event = registry_pb2.WatchResponse.FromString(body)
        kind = event.WhichOneof("object")
        if kind is not None and not getattr(event, kind).tenant:
            getattr(event, kind).tenant = context.default_tenant
            conn.execute(
                "UPDATE events SET body=? WHERE rowid=?", (event.SerializeToString(), rowid)
            )


def _system_tenant(name: str) -> str:
    return SYSTEM_TENANT if name in LEGACY_SYSTEM_TENANTS else name


def _rename_legacy_system_tenant(conn: sqlite3.Connection, context: MigrationContext) -> None:
    """4: objects owned by (or allowing) a legacy name of the system tenant now name
    SYSTEM_TENANT, so they stay visible to the suite's services after the rename."""
    del context
    legacy = list(LEGACY_SYSTEM_TENANTS)
    marks = ",".join("?" * len(legacy))
    for table, message in _BODIES.items():
        for rowid, body in conn.execute(f"SELECT rowid, body FROM {table}").fetchall():
            obj = message.FromString(body)
            changed = obj.tenant in legacy  # type: ignore[attr-defined]
            obj.tenant = _system_tenant(obj.tenant)  # type: ignore[attr-defined]
            if isinstance(obj, registry_pb2.ModelPolicy) and set(obj.allowed_tenants) & set(legacy):
                allowed = dict.fromkeys(_system_tenant(t) for t in obj.allowed_tenants)
                obj.ClearField("allowed_tenants")
                obj.allowed_tenants.extend(allowed)
                changed = True
            if changed:
                conn.execute(
                    f"UPDATE {table} SET body=? WHERE rowid=?", (obj.SerializeToString(), rowid)
                )
    renamed = (SYSTEM_TENANT, *legacy)
    conn.execute(f"UPDATE deployment_history SET tenant=? WHERE tenant IN ({marks})", renamed)
    conn.execute(
        f"UPDATE OR IGNORE artifact_owners SET tenant=? WHERE tenant IN ({marks})", renamed
    )
    conn.execute(f"DELETE FROM artifact_owners WHERE tenant IN ({marks})", legacy)
    for name, body in conn.execute(
        f"SELECT name, body FROM tenants WHERE name IN ({marks})", legacy
    ).fetchall():
        record = registry_pb2.Tenant.FromString(body)
        record.name = SYSTEM_TENANT
        conn.execute(
            "INSERT OR IGNORE INTO tenants (name, body) VALUES (?, ?)",
            (SYSTEM_TENANT, record.SerializeToString()),
        )
        conn.execute("DELETE FROM tenants WHERE name=?", (name,))
    for rowid, body in conn.execute("SELECT rowid, body FROM events").fetchall():
        event = registry_pb2.WatchResponse.FromString(body)
        kind = event.WhichOneof("object")
        if kind is None:
            continue
        obj = getattr(event, kind)
        field = "name" if kind == "tenant" else "tenant"
        if getattr(obj, field) in legacy:
            setattr(obj, field, SYSTEM_TENANT)
            conn.execute(
                "UPDATE events SET body=? WHERE rowid=?", (event.SerializeToString(), rowid)
            )


Migration = str | Callable[[sqlite3.Connection, MigrationContext], None]

#: Migration N (1-based) takes the schema from version N-1 to N. Append only.
MIGRATIONS: tuple[Migration, ...] = (
    # 1: objects stored as serialized protos under their natural keys.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO meta (key, value) VALUES ('revision', 0);
    CREATE TABLE models (name TEXT PRIMARY KEY, body BLOB NOT NULL);
    CREATE TABLE versions (
        model_name TEXT NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (model_name, version));
    CREATE TABLE aliases (
        model_name TEXT NOT NULL, alias TEXT NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (model_name, alias));
    CREATE TABLE deployments (model_name TEXT PRIMARY KEY, body BLOB NOT NULL);
    CREATE TABLE policies (model_name TEXT PRIMARY KEY, body BLOB NOT NULL);
    CREATE TABLE deployment_history (
        revision INTEGER PRIMARY KEY, model_name TEXT NOT NULL, body BLOB NOT NULL);
    CREATE INDEX deployment_history_by_model ON deployment_history (model_name, revision);
    CREATE TABLE events (
        revision INTEGER NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (revision, seq));
    CREATE TABLE artifacts (
        digest TEXT PRIMARY KEY, size_bytes INTEGER NOT NULL,
        content_type TEXT NOT NULL, create_time REAL NOT NULL);
    """,
    _own_everything,
    # 3: tenant records (enabled flag, quotas), kept like every other object.
    "CREATE TABLE tenants (name TEXT PRIMARY KEY, body BLOB NOT NULL);",
    _rename_legacy_system_tenant,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer registry; refuse to touch it."""


def migrate(conn: sqlite3.Connection, context: MigrationContext | None = None) -> int:
    """Bring the schema up to SCHEMA_VERSION; returns the version found."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {found} is newer than this registry ({SCHEMA_VERSION})"
        )
    for number in range(found + 1, SCHEMA_VERSION + 1):
        step = MIGRATIONS[number - 1]
        conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(step, str):
                for statement in _statements(step):
                    conn.execute(statement)
            else:
                step(conn, context or MigrationContext())
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


def _statements(script: str) -> list[str]:
    """Split a migration into statements (our scripts hold no ';' in literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]
