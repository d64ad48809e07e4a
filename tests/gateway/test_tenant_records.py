"""Tenants as registry records: an admin sets quotas and disables a tenant at run time,
and two real gateway replicas sharing one real Redis apply it through Watch, with no
restart. Who may read and write the records follows the ownership rules."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

import lattice
from lattice.tokens import SYSTEM_TENANT, TENANT_SCOPES
from lattice.v1 import inference_pb2, registry_pb2, registry_pb2_grpc
from services.suite.starter import probe_token, wait_until_served
from services.suite.up import STARTER_TENANT
from tests.cli.conftest import Cli
from tests.gateway.support import SECRET, bearer, token

R = registry_pb2


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "not picked up in time"
        await asyncio.sleep(0.02)


def _record(gateway, name: str):
    return gateway.gateway._router._view.tenant(name)  # type: ignore[attr-defined]


async def test_quota_and_disable_reach_every_replica_without_restart(stack, redis_server):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    await stack.model("embed", 1, [(1, 100)])
    await stack.start_inference(1)
    # No default quota at all: only the records below limit anyone.
    replicas = [await stack.start_gateway(redis_url=redis_server.url) for _ in range(2)]
    stubs = [stack.inference_stub(g) for g in replicas]
    admin_registry = registry_pb2_grpc.ModelRegistryServiceStub(stack.channel(replicas[0].address))
    admin = bearer(token("ops", scopes=("admin",), subject="root"))
    acme = bearer(token("acme"))
    chat = inference_pb2.GenerateRequest(model="chat", prompt="hi")
    embed = inference_pb2.GenerateRequest(model="embed", prompt="hi")
    for _ in range(10):
        await stubs[0].Generate(chat, metadata=acme)  # unlimited before any record

    created = await admin_registry.CreateTenant(
        R.CreateTenantRequest(
            tenant=R.Tenant(
                name="acme",
                enabled=True,
                quota=R.TenantQuota(requests=4, window=duration_pb2.Duration(seconds=30)),
                model_quotas={"embed": R.TenantQuota(requests=2)},
            )
        ),
        metadata=admin,
    )
    assert created.tenant.updated_by == "root" and created.tenant.revision > 0
    await _until(lambda: all(_record(g, "acme") is not None for g in replicas))

    codes = [await _code(stubs[i % 2].Generate(chat, metadata=acme)) for i in range(6)]
    assert codes == [grpc.StatusCode.OK] * 4 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2
    # The per-model quota counts apart from the tenant's.
    codes = [await _code(stubs[i % 2].Generate(embed, metadata=acme)) for i in range(3)]
    assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED]
    # Another tenant, without a record, is unaffected.
    await stubs[1].Generate(chat, metadata=bearer(token("globex")))

    current = created.tenant
    current.enabled = False
    await admin_registry.UpdateTenant(
        R.UpdateTenantRequest(tenant=current, expected_revision=current.revision), metadata=admin
    )
    await _until(lambda: all(not _record(g, "acme").enabled for g in replicas))
    for stub in stubs:
        assert await _code(stub.Generate(chat, metadata=acme)) == grpc.StatusCode.PERMISSION_DENIED
    registry = registry_pb2_grpc.ModelRegistryServiceStub(stack.channel(replicas[1].address))
    listing = registry.ListModels(
        R.ListModelsRequest(), metadata=bearer(token("acme", TENANT_SCOPES))
    )
    assert await _code(listing) == grpc.StatusCode.PERMISSION_DENIED

    # A stale update is refused; enabling again lets the tenant back in.
    assert (
        await _code(
            admin_registry.UpdateTenant(
                R.UpdateTenantRequest(tenant=current, expected_revision=current.revision),
                metadata=admin,
            )
        )
        == grpc.StatusCode.ABORTED
    )
    current.enabled = True
    current.ClearField("quota")
    await admin_registry.UpdateTenant(R.UpdateTenantRequest(tenant=current), metadata=admin)
    await _until(lambda: all(_record(g, "acme").enabled for g in replicas))
    assert await _code(stubs[0].Generate(chat, metadata=acme)) == grpc.StatusCode.OK


async def test_who_may_read_and_write_tenant_records(stack):
    await stack.start_registry()
    await stack.start_inference(1)
    gateway = await stack.start_gateway()
    stub = registry_pb2_grpc.ModelRegistryServiceStub(stack.channel(gateway.address))
    admin = bearer(token("ops", scopes=("admin",)))
    acme = bearer(token("acme", TENANT_SCOPES))
    for name in ("acme", "globex"):
        await stub.CreateTenant(
            R.CreateTenantRequest(tenant=R.Tenant(name=name, enabled=True)), metadata=admin
        )
    # Writes are the admin's alone (refused at the gateway and again by the registry).
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert (
        await _code(
            stub.CreateTenant(R.CreateTenantRequest(tenant=R.Tenant(name="x")), metadata=acme)
        )
        == denied
    )
    own = R.UpdateTenantRequest(tenant=R.Tenant(name="acme", enabled=True))
    assert await _code(stub.UpdateTenant(own, metadata=acme)) == denied
    # A tenant reads its own record only; the other's does not exist for it.
    assert (await stub.GetTenant(R.GetTenantRequest(name="acme"), metadata=acme)).tenant.enabled
    other = stub.GetTenant(R.GetTenantRequest(name="globex"), metadata=acme)
    assert await _code(other) == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListTenants(R.ListTenantsRequest(), metadata=acme)
    assert [t.name for t in listed.tenants] == ["acme"]
    everyone = await stub.ListTenants(R.ListTenantsRequest(), metadata=admin)
    assert [t.name for t in everyone.tenants] == ["acme", "globex"]
    # Bad input names the field and stores nothing.
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.CreateTenant(
            R.CreateTenantRequest(
                tenant=R.Tenant(
                    name="bad",
                    quota=R.TenantQuota(window=duration_pb2.Duration(seconds=0, nanos=5)),
                )
            ),
            metadata=admin,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tenant.quota.window" in (bad.value.details() or "")
    assert await _code(stub.GetTenant(R.GetTenantRequest(name="bad"), metadata=admin)) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert (
        await _code(
            stub.CreateTenant(R.CreateTenantRequest(tenant=R.Tenant(name="acme")), metadata=admin)
        )
        == grpc.StatusCode.ALREADY_EXISTS
    )


async def test_lattice_tenants_commands_with_tokens_from_lattice_token(stack, tmp_path):
    await stack.start_registry()
    await stack.start_inference(1)
    gateway = await stack.start_gateway()
    anonymous = Cli(gateway.address, None, tmp_path)

    def mint(*args: str) -> str:
        return anonymous("token", *args, LATTICE_DEV_JWT_SECRET=SECRET).stdout.strip()

    admin = Cli(gateway.address, mint("--tenant", "ops", "--admin"), tmp_path)
    member = Cli(gateway.address, mint("--tenant", "acme"), tmp_path)

    def run() -> None:
        admin("tenants", "create", "acme")
        admin("tenants", "set-quota", "acme", "--requests", "3", "--window", "30")
        admin("tenants", "set-quota", "acme", "--model", "chat", "--tokens", "500")
        shown = admin.json("tenants", "disable", "acme")
        assert shown["enabled"] is False
        assert shown["quota"]["requests"] == 3 and shown["model_quotas"]["chat"]["tokens"] == "500"
        assert [t["name"] for t in admin.json("tenants", "list")] == ["acme"]
        # A token without --admin is a tenant's token: no writes, and it reads only its own
        # record; this one is disabled, so it is refused outright.
        refused = member("tenants", "create", "globex", ok=False)
        assert "PERMISSION_DENIED" in refused.stderr
        admin("tenants", "enable", "acme")
        assert [t["name"] for t in member.json("tenants", "list")] == ["acme"]
        assert "PERMISSION_DENIED" in member("tenants", "disable", "acme", ok=False).stderr

    await asyncio.to_thread(run)


async def test_lattice_up_readiness_probes_spend_no_tenant_quota(stack, redis_server):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    await stack.start_inference(1)
    gateway = await stack.start_gateway(redis_url=redis_server.url, quota_requests=100)
    await stack.wait_view(gateway, 3)

    def probe() -> None:
        with lattice.Client(gateway.address, probe_token(SECRET)) as client:
            wait_until_served(client, "chat:1", timeout=10)

    await asyncio.to_thread(probe)
    quotas = gateway.gateway._quotas  # type: ignore[attr-defined]
    assert await quotas.usage(STARTER_TENANT) == (0, 0)
    assert (await quotas.usage(SYSTEM_TENANT))[0] == 1
