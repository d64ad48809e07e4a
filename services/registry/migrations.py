"""Versioned schema migrations for the registry's SQLite database.

`PRAGMA user_version` holds the schema version. Each migration runs once, in
its own transaction together with the version bump, so a crash leaves the
database at the old or the new version, never in between. A database newer
than this code is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3

#: Migration N (1-based) takes the schema from version N-1 to N. Append only.
MIGRATIONS: tuple[str, ...] = (
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
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer registry; refuse to touch it."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to SCHEMA_VERSION; returns the version found."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"database schema version {found} is newer than this registry ({SCHEMA_VERSION})"
        )
    for number in range(found + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[number - 1]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


def _statements(script: str) -> list[str]:
    """Split a migration into statements (our scripts hold no ';' in literals)."""
    return [s.strip() for s in script.split(";") if s.strip()]
