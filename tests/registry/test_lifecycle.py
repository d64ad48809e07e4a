"""The whole workflow through gRPC: model -> artifact -> version -> alias -> rollout."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from lattice.artifacts import sha256_hex
from lattice.v1 import registry_pb2
from tests.registry.support import TEXT, RegistryClient
from tests.support.identity import ADMIN


async def test_full_lifecycle_with_history(client: RegistryClient):
    stub = client.stub
    model = await client.model("gpt-tiny")
    assert model.task == TEXT and model.latest_version == 0
    data = b"weights" * 1000
    uploaded = await client.upload(data)
    assert uploaded.digest == sha256_hex(data) and uploaded.created
    assert uploaded.artifact_uri == f"lattice-artifact://sha256/{uploaded.digest}"

    v1 = await client.version("gpt-tiny", data)
    v2 = await client.version("gpt-tiny")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.status == registry_pb2.VERSION_STATUS_READY
    assert v1.artifact_size_bytes == len(data)
    assert (
        await stub.GetModel(registry_pb2.GetModelRequest(name="gpt-tiny"))
    ).model.latest_version == 2

    alias = (
        await stub.SetAlias(
            registry_pb2.SetAliasRequest(model_name="gpt-tiny", alias="champion", version=1)
        )
    ).alias
    assert alias.version == 1 and alias.revision > 0
    moved = (
        await stub.SetAlias(
            registry_pb2.SetAliasRequest(
                model_name="gpt-tiny", alias="champion", version=2, expected_revision=alias.revision
            )
        )
    ).alias
    assert moved.version == 2 and moved.revision > alias.revision
    resolved = await stub.ResolveModel(registry_pb2.ResolveModelRequest(model="gpt-tiny@champion"))
    assert resolved.version.version == 2

    who = dataclasses.replace(ADMIN, subject="alice").metadata()
    canary = await client.stub.UpdateDeployment(
        registry_pb2.UpdateDeploymentRequest(
            model_name="gpt-tiny",
            routes=[
                registry_pb2.Route(version=1, weight=90),
                registry_pb2.Route(version=2, weight=10),
            ],
            reason="canary",
        ),
        metadata=who,
    )
    assert canary.deployment.updated_by == "alice"
    full = await client.deploy(
        "gpt-tiny", (1, 0), (2, 100), expected=canary.deployment.revision, reason="promote"
    )
    offline = await client.deploy("gpt-tiny", reason="retire")
    assert not offline.routes

    got = (
        await stub.GetDeployment(registry_pb2.GetDeploymentRequest(model_name="gpt-tiny"))
    ).deployment
    assert got == offline
    resolved = await stub.ResolveModel(registry_pb2.ResolveModelRequest(model="gpt-tiny"))
    assert resolved.model_name == "gpt-tiny" and not resolved.HasField("version")
    assert resolved.deployment.revision == offline.revision

    history = (
        await stub.ListDeploymentHistory(
            registry_pb2.ListDeploymentHistoryRequest(model_name="gpt-tiny")
        )
    ).entries
    assert [e.reason for e in history] == ["retire", "promote", "canary"]
    assert [e.actor for e in history] == ["test-admin", "test-admin", "alice"]
    assert {e.tenant for e in history} == {ADMIN.tenant}
    assert [e.revision for e in history] == [
        offline.revision,
        full.revision,
        canary.deployment.revision,
    ]
    retire, promote, first = history
    assert not first.from_deployment.routes
    assert [(r.version, r.weight) for r in first.to_deployment.routes] == [(1, 90), (2, 10)]
    assert promote.from_deployment == first.to_deployment
    assert [(r.version, r.weight) for r in promote.to_deployment.routes] == [(1, 0), (2, 100)]
    assert retire.from_deployment == promote.to_deployment and not retire.to_deployment.routes

    # Offline now, so the model can go; its history stays (append-only).
    await stub.DeleteModel(registry_pb2.DeleteModelRequest(name="gpt-tiny"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetModel(registry_pb2.GetModelRequest(name="gpt-tiny"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    kept = await stub.ListDeploymentHistory(registry_pb2.ListDeploymentHistoryRequest())
    assert len(kept.entries) == 3


async def test_delete_refused_while_online(client: RegistryClient):
    await client.model("m")
    await client.version("m")
    await client.deploy("m", (1, 100))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.DeleteModel(registry_pb2.DeleteModelRequest(name="m"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "offline" in info.value.details()


async def test_shadow_and_routing_rules(client: RegistryClient):
    await client.model("m")
    for _ in range(3):
        await client.version("m")
    deployment = await client.deploy("m", (1, 100), shadow=3)
    assert deployment.shadow_version == 3
    for routes, shadow, code in [
        (((1, 50), (2, 40)), 0, grpc.StatusCode.INVALID_ARGUMENT),  # sum 90
        (((1, 100),), 1, grpc.StatusCode.INVALID_ARGUMENT),  # shadow also routed
        (((9, 100),), 0, grpc.StatusCode.NOT_FOUND),  # unknown version
        (((1, 100),), 9, grpc.StatusCode.NOT_FOUND),  # unknown shadow
        ((), 2, grpc.StatusCode.INVALID_ARGUMENT),  # shadow without routes
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.deploy("m", *routes, shadow=shadow)
        assert info.value.code() == code, (routes, shadow)
    unchanged = (
        await client.stub.GetDeployment(registry_pb2.GetDeploymentRequest(model_name="m"))
    ).deployment
    assert unchanged == deployment


async def test_pagination_walks_everything_once(client: RegistryClient):
    names = [f"m{i:02d}" for i in range(7)]
    for name in names:
        await client.model(name)
    for _ in range(5):
        await client.version("m00")
    seen, token = [], ""
    while True:
        page = await client.stub.ListModels(
            registry_pb2.ListModelsRequest(page_size=3, page_token=token)
        )
        seen += [m.name for m in page.models]
        token = page.next_page_token
        if not token:
            break
    assert seen == names
    versions, token = [], ""
    while True:
        page = await client.stub.ListVersions(
            registry_pb2.ListVersionsRequest(model_name="m00", page_size=2, page_token=token)
        )
        versions += [v.version for v in page.versions]
        token = page.next_page_token
        if not token:
            break
    assert versions == [5, 4, 3, 2, 1]
    deployments = await client.stub.ListDeployments(registry_pb2.ListDeploymentsRequest())
    assert [d.model_name for d in deployments.deployments] == names
    assert all(not d.routes for d in deployments.deployments)


async def test_archived_versions_cannot_go_online(client: RegistryClient):
    await client.model("m")
    await client.version("m")
    await client.version("m")
    archived = await client.stub.UpdateVersionStatus(
        registry_pb2.UpdateVersionStatusRequest(
            model_name="m", version=2, status=registry_pb2.VERSION_STATUS_ARCHIVED
        )
    )
    assert archived.version.status == registry_pb2.VERSION_STATUS_ARCHIVED
    for routes, shadow in ((((2, 100),), 0), (((1, 100),), 2)):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.deploy("m", *routes, shadow=shadow)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "ARCHIVED" in info.value.details()
    await client.stub.UpdateVersionStatus(
        registry_pb2.UpdateVersionStatusRequest(
            model_name="m", version=2, status=registry_pb2.VERSION_STATUS_READY
        )
    )
    assert (await client.deploy("m", (2, 100))).routes[0].version == 2


async def test_history_pages_newest_first_per_model(client: RegistryClient):
    for name in ("a", "b"):
        await client.model(name)
        await client.version(name)
    for weight_round in range(3):
        await client.deploy("a", (1, 100), reason=f"a{weight_round}")
        await client.deploy("b", (1, 100), reason=f"b{weight_round}")
    reasons, token, tokens = [], "", []
    while True:
        page = await client.stub.ListDeploymentHistory(
            registry_pb2.ListDeploymentHistoryRequest(model_name="a", page_size=2, page_token=token)
        )
        reasons += [entry.reason for entry in page.entries]
        token = page.next_page_token
        tokens.append(token)
        if not token:
            break
    assert reasons == ["a2", "a1", "a0"]
    everything = await client.stub.ListDeploymentHistory(
        registry_pb2.ListDeploymentHistoryRequest(page_size=1000)
    )
    revisions = [entry.revision for entry in everything.entries]
    assert len(revisions) == 6 and revisions == sorted(revisions, reverse=True)
    with pytest.raises(grpc.aio.AioRpcError) as info:  # a token from another listing
        await client.stub.ListDeploymentHistory(
            registry_pb2.ListDeploymentHistoryRequest(model_name="b", page_token=tokens[0])
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
