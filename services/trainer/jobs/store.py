"""Job state in SQLite (WAL): the jobs, their event log, and where each job's
event file was read up to. Everything a restarted service needs to carry on.

Calls are short and synchronous; the service makes them from its event loop.

A job belongs to the tenant that submitted it (column and `Job.tenant`);
`get_for`/`list` scope to a caller. Idempotency keys are per tenant: the
stored key is `<len>:<tenant>:<request_id>`, so one tenant's key never finds
another's job. A database from before jobs had owners is migrated on open:
its jobs go to `default_tenant`.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from lattice.errors import AlreadyExists, NotFound
from lattice.tokens import LEGACY_SYSTEM_TENANTS, SYSTEM_TENANT
from lattice.v1 import trainer_pb2
from services.runtime.identity import Caller

TERMINAL = frozenset(
    {
        trainer_pb2.JOB_STATE_SUCCEEDED,
        trainer_pb2.JOB_STATE_FAILED,
        trainer_pb2.JOB_STATE_CANCELLED,
        trainer_pb2.JOB_STATE_FAILED_QUALITY_GATE,
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    request_id TEXT UNIQUE,
    state INTEGER NOT NULL,
    job BLOB NOT NULL,
    pgid INTEGER NOT NULL DEFAULT 0,
    pg_start REAL NOT NULL DEFAULT 0,
    events_offset INTEGER NOT NULL DEFAULT 0,
    last_sequence INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
"""


def request_key(tenant: str, request_id: str) -> str | None:
    """The stored idempotency key: unambiguous per (tenant, request_id)."""
    return f"{len(tenant)}:{tenant}:{request_id}" if request_id else None


class JobStore:
    def __init__(self, path: Path, *, default_tenant: str = "default") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._add_owners(default_tenant)
        self._rename_legacy_system_tenant()

    def _add_owners(self, default_tenant: str) -> None:
        """Migrate a database from before jobs had owners, in one transaction."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "tenant" in columns:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
            rows = self._db.execute("SELECT id, request_id, job FROM jobs").fetchall()
            for job_id, request_id, body in rows:
                job = trainer_pb2.Job.FromString(body)
                job.tenant = job.tenant or default_tenant
                self._db.execute(
                    "UPDATE jobs SET tenant = ?, request_id = ?, job = ? WHERE id = ?",
                    (
                        job.tenant,
                        request_key(job.tenant, request_id or ""),
                        job.SerializeToString(),
                        job_id,
                    ),
                )
            self._db.execute("CREATE INDEX jobs_by_tenant ON jobs (tenant, seq)")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _rename_legacy_system_tenant(self) -> None:
        """Jobs owned by an old name of the system tenant now belong to SYSTEM_TENANT."""
        marks = ",".join("?" * len(LEGACY_SYSTEM_TENANTS))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = self._db.execute(
                f"SELECT id, request_id, job FROM jobs WHERE tenant IN ({marks})",
                LEGACY_SYSTEM_TENANTS,
            ).fetchall()
            for job_id, stored_key, body in rows:
                job = trainer_pb2.Job.FromString(body)
                old_prefix = f"{len(job.tenant)}:{job.tenant}:"
                request_id = (stored_key or "").removeprefix(old_prefix)
                job.tenant = SYSTEM_TENANT
                self._db.execute(
                    "UPDATE jobs SET tenant = ?, request_id = ?, job = ? WHERE id = ?",
                    (
                        SYSTEM_TENANT,
                        request_key(SYSTEM_TENANT, request_id),
                        job.SerializeToString(),
                        job_id,
                    ),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()

    def create(self, job: trainer_pb2.Job, request_id: str) -> trainer_pb2.Job:
        """Store a new job; `job.tenant` must name its owner."""
        assert job.tenant, "a job needs an owning tenant"
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, seq, request_id, state, job, tenant) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        job.id,
                        seq,
                        request_key(job.tenant, request_id),
                        job.state,
                        job.SerializeToString(),
                        job.tenant,
                    ),
                )
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"job with request_id {request_id!r} exists") from None
        return job

    def by_request_id(self, tenant: str, request_id: str) -> trainer_pb2.Job | None:
        row = self._db.execute(
            "SELECT job FROM jobs WHERE request_id = ?", (request_key(tenant, request_id),)
        ).fetchone()
        return trainer_pb2.Job.FromString(row[0]) if row else None

    def get(self, job_id: str) -> trainer_pb2.Job:
        row = self._db.execute("SELECT job FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id!r} not found")
        return trainer_pb2.Job.FromString(row[0])

    def get_for(self, caller: Caller, job_id: str) -> trainer_pb2.Job:
        """The job if the caller may see it; another tenant's is NOT_FOUND."""
        job = self.get(job_id)
        if not caller.may_see(job.tenant):
            raise NotFound(f"job {job_id!r} not found")
        return job

    def save(self, job: trainer_pb2.Job) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = ?, job = ? WHERE id = ?",
                (job.state, job.SerializeToString(), job.id),
            )

    def list(
        self,
        states: Sequence[int] = (),
        offset: int = 0,
        limit: int = 50,
        tenant: str | None = None,
    ) -> list[trainer_pb2.Job]:
        """Newest first; only `tenant`'s jobs unless it is None."""
        where: list[str] = []
        params: list[object] = []
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        query = "SELECT job FROM jobs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY seq DESC LIMIT ? OFFSET ?"
        rows = self._db.execute(query, [*params, limit, offset]).fetchall()
        return [trainer_pb2.Job.FromString(r[0]) for r in rows]

    def in_states(self, states: Iterable[int]) -> builtins.list[trainer_pb2.Job]:
        """Oldest first (queue order)."""
        states = list(states)
        rows = self._db.execute(
            f"SELECT job FROM jobs WHERE state IN ({','.join('?' * len(states))}) ORDER BY seq",
            states,
        ).fetchall()
        return [trainer_pb2.Job.FromString(r[0]) for r in rows]

    # -- the process group --------------------------------------------------------------

    def set_process_group(self, job_id: str, pgid: int, started: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET pgid = ?, pg_start = ? WHERE id = ?", (pgid, started, job_id)
            )

    def process_group(self, job_id: str) -> tuple[int, float]:
        row = self._db.execute("SELECT pgid, pg_start FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return (row[0], row[1]) if row else (0, 0.0)

    # -- events ----------------------------------------------------------------------

    def events_offset(self, job_id: str) -> int:
        row = self._db.execute("SELECT events_offset FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else 0

    def append_events(
        self,
        job_id: str,
        events: Sequence[trainer_pb2.WatchJobResponse],
        events_offset: int | None = None,
        job: trainer_pb2.Job | None = None,
    ) -> builtins.list[trainer_pb2.WatchJobResponse]:
        """Number and store events (and optionally the new file offset and job) atomically."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute(
                    "SELECT last_sequence FROM jobs WHERE id = ?", (job_id,)
                ).fetchone()[0]
                now = time.time()
                for event in events:
                    last += 1
                    event.sequence = last
                    if not event.HasField("time"):
                        event.time.FromNanoseconds(int(now * 1e9))
                    self._db.execute(
                        "INSERT INTO events (job_id, sequence, event) VALUES (?, ?, ?)",
                        (job_id, last, event.SerializeToString()),
                    )
                self._db.execute("UPDATE jobs SET last_sequence = ? WHERE id = ?", (last, job_id))
                if events_offset is not None:
                    self._db.execute(
                        "UPDATE jobs SET events_offset = ? WHERE id = ?", (events_offset, job_id)
                    )
                if job is not None:
                    self._db.execute(
                        "UPDATE jobs SET state = ?, job = ? WHERE id = ?",
                        (job.state, job.SerializeToString(), job.id),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return list(events)

    def events_after(
        self, job_id: str, sequence: int, limit: int = 500
    ) -> builtins.list[trainer_pb2.WatchJobResponse]:
        rows = self._db.execute(
            "SELECT event FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (job_id, sequence, limit),
        ).fetchall()
        return [trainer_pb2.WatchJobResponse.FromString(r[0]) for r in rows]

    def counts(self) -> dict[int, int]:
        """Jobs per state."""
        rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return dict(rows)
