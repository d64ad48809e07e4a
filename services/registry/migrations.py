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
