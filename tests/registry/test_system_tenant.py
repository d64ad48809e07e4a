"""One name for the suite's own tenant, and stores written under the old name stay readable.

The suite once called its own tenant both `lattice-suite` (the identity a service's
token carried) and `lattice-system` (registry views, readiness probes). Now there is
one, `lattice.tokens.SYSTEM_TENANT`; a registry database (schema 3), a job store and a
dataset store holding rows owned by the old name are rewritten when opened, so the
suite's services (acting as SYSTEM_TENANT) still find them.
"""

from __future__ import annotations

import sqlite3

from lattice.tokens import LEGACY_SYSTEM_TENANTS, SYSTEM_TENANT
from lattice.v1 import registry_pb2, registry_pb2_grpc, trainer_pb2
from services.registry.migrations import MIGRATIONS, MigrationContext, _statements
from services.registry.server import build_server
from services.runtime.identity import Caller, service_caller
from services.runtime.keys import LocalKeyRing
from services.runtime.security import ServiceSecurity
from services.trainer.data.store import RECORD, DatasetStore
from services.trainer.jobs.store import JobStore
from tests.registry.conftest import settings_for
from tests.support.identity import caller_channel

OLD = LEGACY_SYSTEM_TENANTS[0]
#: The system tenant without admin: it sees only what it owns.
SYSTEM = Caller(tenant=SYSTEM_TENANT, subject="service:probe")


def test_every_service_identity_names_the_one_system_tenant(tmp_path):
    assert OLD != SYSTEM_TENANT
    assert service_caller("gateway").tenant == SYSTEM_TENANT
    assert service_caller("gateway").admin
    # The identity a channel signs for a service's own calls is the same one.
    security = ServiceSecurity("trainer", LocalKeyRing.open_or_create(tmp_path / "ring.json"))
    authorization = dict(security.minter("registry").authorize([]))["authorization"]
    verifier = ServiceSecurity("registry", security.keys).verifier()
    assert verifier.verify(authorization).tenant == SYSTEM_TENANT


def _registry_at_schema_3(db) -> None:
    """A registry database exactly as schema 3 left it, holding rows of the old name."""
    conn = sqlite3.connect(db, isolation_level=None)
    for number, step in enumerate(MIGRATIONS[:3], start=1):
        if isinstance(step, str):
            for statement in _statements(step):
                conn.execute(statement)
        else:
            step(conn, MigrationContext())
        conn.execute(f"PRAGMA user_version = {number}")
    conn.close()
    _insert_old_rows(db)


async def test_registry_rows_of_the_old_system_tenant_name_are_renamed(tmp_path):
    db = tmp_path / "registry" / "registry.db"
    db.parent.mkdir(parents=True)
    _registry_at_schema_3(db)
    server = await build_server(settings_for(tmp_path))
    await server.start()
    try:
        async with caller_channel(server, SYSTEM) as channel:
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            model = (await stub.GetModel(registry_pb2.GetModelRequest(name="probe"))).model
            assert model.tenant == SYSTEM_TENANT
            version = await stub.GetVersion(
                registry_pb2.GetVersionRequest(model_name="probe", version=1)
            )
            assert version.version.tenant == SYSTEM_TENANT
            policy = (
                await stub.GetPolicy(registry_pb2.GetPolicyRequest(model_name="probe"))
            ).policy
            assert list(policy.allowed_tenants) == [SYSTEM_TENANT, "acme"]
            tenant = await stub.GetTenant(registry_pb2.GetTenantRequest(name=SYSTEM_TENANT))
            assert tenant.tenant.name == SYSTEM_TENANT
            replay = stub.Watch(registry_pb2.WatchRequest(from_revision=0))
            event = await replay.read()
            while event.WhichOneof("object") != "model":
                event = await replay.read()
            assert event.model.tenant == SYSTEM_TENANT
            replay.cancel()
    finally:
        await server.stop(0)
    conn = sqlite3.connect(db)
    try:
        for (body,) in conn.execute("SELECT body FROM models UNION ALL SELECT body FROM events"):
            assert OLD.encode() not in body
        assert conn.execute("SELECT COUNT(*) FROM tenants WHERE name=?", (OLD,)).fetchone()[0] == 0
    finally:
        conn.close()


def _insert_old_rows(db) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    model = registry_pb2.Model(name="probe", task=1, latest_version=1, tenant=OLD)
    version = registry_pb2.ModelVersion(
        model_name="probe", version=1, artifact_digest="cd" * 32, tenant=OLD
    )
    policy = registry_pb2.ModelPolicy(model_name="probe", allowed_tenants=[OLD, "acme"], tenant=OLD)
    rows = [
        ("INSERT INTO models (name, body) VALUES ('probe', ?)", model),
        ("INSERT INTO versions (model_name, version, body) VALUES ('probe', 1, ?)", version),
        ("INSERT INTO policies (model_name, body) VALUES ('probe', ?)", policy),
    ]
    for sql, message in rows:
        conn.execute(sql, (message.SerializeToString(),))
    conn.execute(
        "INSERT INTO tenants (name, body) VALUES (?, ?)",
        (OLD, registry_pb2.Tenant(name=OLD, enabled=True).SerializeToString()),
    )
    put = registry_pb2.WatchResponse(
        type=registry_pb2.WATCH_EVENT_TYPE_PUT, revision=1, model=model
    )
    conn.execute(
        "INSERT INTO events (revision, seq, body) VALUES (1, 0, ?)", (put.SerializeToString(),)
    )
    conn.execute("UPDATE meta SET value = 1 WHERE key = 'revision'")
    conn.close()


def test_jobs_of_the_old_system_tenant_name_are_renamed_and_keep_their_key(tmp_path):
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    store.create(trainer_pb2.Job(id="job-sys", tenant=OLD), "nightly")
    store.close()
    store = JobStore(path)
    try:
        assert store.get_for(SYSTEM, "job-sys").tenant == SYSTEM_TENANT
        assert store.by_request_id(SYSTEM_TENANT, "nightly").id == "job-sys"
        assert [j.id for j in store.list(tenant=SYSTEM_TENANT)] == ["job-sys"]
        assert store.list(tenant=OLD) == []
    finally:
        store.close()


def test_datasets_of_the_old_system_tenant_name_are_renamed(tmp_path):
    folder = tmp_path / "sys-0123456789ab"
    folder.mkdir()
    (folder / RECORD).write_bytes(
        trainer_pb2.Dataset(id="sys-0123456789ab", name="sys", tenant=OLD).SerializeToString()
    )
    store = DatasetStore(tmp_path)
    assert store.visible(SYSTEM, "sys-0123456789ab").tenant == SYSTEM_TENANT
    assert trainer_pb2.Dataset.FromString((folder / RECORD).read_bytes()).tenant == SYSTEM_TENANT
