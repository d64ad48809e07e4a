"""ReportVersionLoad: a replica's load failures and recoveries in the deployment history.

A real registry server on port 0. Load events sit in the model's history beside
deployment changes (kind tells them apart), leave the deployment as it was, are
recorded once per change of fate per replica, belong to the model's owner, and
only suite services (admin) may write them.
"""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from lattice.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from tests.support.identity import ACME, GLOBEX, caller_channel

FAILED = registry_pb2.DEPLOYMENT_EVENT_KIND_VERSION_LOAD_FAILED
LOADED = registry_pb2.DEPLOYMENT_EVENT_KIND_VERSION_LOADED
CHANGE = registry_pb2.DEPLOYMENT_EVENT_KIND_CHANGE


def _report(version: int = 2, *, loaded: bool = False, reason: str = "", replica: str = "r1:1"):
    return registry_pb2.ReportVersionLoadRequest(
        model_name="gpt-tiny", version=version, loaded=loaded, reason=reason, replica=replica
    )


async def _history(stub) -> list[registry_pb2.DeploymentHistoryEntry]:
    answer = await stub.ListDeploymentHistory(
        registry_pb2.ListDeploymentHistoryRequest(model_name="gpt-tiny")
    )
    return list(answer.entries)


async def test_failures_and_recoveries_are_recorded_once_per_change(stub, client):
    await client.model()
    await client.version()
    await client.version()
    deployment = await client.deploy("gpt-tiny", (1, 90), (2, 10), reason="canary")
    reason = "the artifact's files could not be read (corrupt or incomplete): header too large"

    first = await stub.ReportVersionLoad(_report(reason=reason))
    assert first.entry.kind == FAILED and first.entry.version == 2
    assert first.entry.reason == f"version 2 failed to load on r1:1: {reason}"
    assert first.entry.to_deployment == first.entry.from_deployment == deployment
    repeat = await stub.ReportVersionLoad(_report(reason=reason))  # a retry, same fate
    assert not repeat.HasField("entry")
    other_replica = await stub.ReportVersionLoad(_report(reason=reason, replica="r2:1"))
    assert other_replica.entry.replica == "r2:1"
    recovered = await stub.ReportVersionLoad(_report(loaded=True))
    assert recovered.entry.kind == LOADED
    assert recovered.entry.reason == "version 2 loaded on r1:1"

    history = await _history(stub)
    assert [(e.kind, e.version, e.replica) for e in history] == [
        (LOADED, 2, "r1:1"),
        (FAILED, 2, "r2:1"),
        (FAILED, 2, "r1:1"),
        (CHANGE, 0, ""),
    ]
    # A load event changes no deployment: the next update needs no new revision check.
    current = await stub.GetDeployment(registry_pb2.GetDeploymentRequest(model_name="gpt-tiny"))
    assert current.deployment == deployment


async def test_bad_reports_are_refused_with_the_field_named(stub, client):
    await client.model()
    await client.version()
    cases = [
        (_report(version=1, reason=""), grpc.StatusCode.INVALID_ARGUMENT, "reason"),
        (_report(version=1, reason="x" * 1025), grpc.StatusCode.INVALID_ARGUMENT, "reason"),
        (_report(version=1, reason="r", replica="h" * 300), grpc.StatusCode.INVALID_ARGUMENT, ""),
        (_report(version=0, reason="r"), grpc.StatusCode.INVALID_ARGUMENT, "version"),
        (_report(version=9, reason="r"), grpc.StatusCode.NOT_FOUND, "version 9"),
        (
            registry_pb2.ReportVersionLoadRequest(model_name="nope", version=1, reason="r"),
            grpc.StatusCode.NOT_FOUND,
            "nope",
        ),
    ]
    for request, code, words in cases:
        with pytest.raises(aio.AioRpcError) as info:
            await stub.ReportVersionLoad(request)
        assert info.value.code() == code, request
        assert words in info.value.details()
    assert [e.kind for e in await _history(stub)] == []


async def test_only_suite_services_report_and_only_the_owner_reads(registry_server, stub):
    await stub.CreateModel(
        registry_pb2.CreateModelRequest(
            model=registry_pb2.Model(
                name="gpt-tiny", task=common_pb2.MODEL_TASK_TEXT_GENERATION, tenant=ACME.tenant
            )
        )
    )
    await stub.CreateVersion(
        registry_pb2.CreateVersionRequest(
            model_name="gpt-tiny",
            artifact_uri="triton://127.0.0.1:1/m",
            format=common_pb2.ARTIFACT_FORMAT_TRITON,
        )
    )
    async with caller_channel(registry_server, ACME) as channel:
        acme = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as info:
            await acme.ReportVersionLoad(_report(version=1, reason="forged"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await stub.ReportVersionLoad(_report(version=1, reason="weights are garbage"))
        (entry,) = await _history(acme)
        assert entry.tenant == ACME.tenant and entry.kind == FAILED
    async with caller_channel(registry_server, GLOBEX) as channel:
        assert await _history(registry_pb2_grpc.ModelRegistryServiceStub(channel)) == []
