"""Optimistic concurrency (ABORTED on a stale revision) and the rollout policy."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2

from lattice.errors import Aborted, FailedPrecondition, from_rpc_error
from lattice.v1 import registry_pb2
from tests.registry.support import RegistryClient


async def _outcomes(*calls) -> list[grpc.StatusCode]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    codes = []
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            codes.append(result.code())
        else:
            assert not isinstance(result, BaseException), result
            codes.append(grpc.StatusCode.OK)
    return sorted(codes, key=lambda c: c.value[0])


async def test_two_deployment_updates_from_one_revision(client: RegistryClient):
    await client.model("m")
    await client.version("m")
    await client.version("m")
    base = await client.deploy("m", (1, 100))
    codes = await _outcomes(
        client.deploy("m", (1, 50), (2, 50), expected=base.revision, reason="a"),
        client.deploy("m", (2, 100), expected=base.revision, reason="b"),
    )
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.ABORTED]
    history = await client.stub.ListDeploymentHistory(
        registry_pb2.ListDeploymentHistoryRequest(model_name="m")
    )
    assert len(history.entries) == 2  # the loser changed nothing
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.deploy("m", (1, 100), expected=base.revision)
    assert isinstance(from_rpc_error(info.value), Aborted)


async def test_alias_and_policy_updates_from_one_revision(client: RegistryClient):
    await client.model("m")
    await client.version("m")
    await client.version("m")
    alias = (
        await client.stub.SetAlias(
            registry_pb2.SetAliasRequest(model_name="m", alias="prod", version=1)
        )
    ).alias
    codes = await _outcomes(
        *(
            client.stub.SetAlias(
                registry_pb2.SetAliasRequest(
                    model_name="m", alias="prod", version=v, expected_revision=alias.revision
                )
            )
            for v in (1, 2)
        )
    )
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.ABORTED]

    policy = (
        await client.stub.SetPolicy(
            registry_pb2.SetPolicyRequest(
                policy=registry_pb2.ModelPolicy(model_name="m", max_new_tokens=64)
            )
        )
    ).policy
    codes = await _outcomes(
        *(
            client.stub.SetPolicy(
                registry_pb2.SetPolicyRequest(
                    policy=registry_pb2.ModelPolicy(model_name="m", max_new_tokens=n),
                    expected_revision=policy.revision,
                )
            )
            for n in (32, 128)
        )
    )
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.ABORTED]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.stub.DeleteAlias(
            registry_pb2.DeleteAliasRequest(
                model_name="m", alias="prod", expected_revision=alias.revision
            )
        )
    assert info.value.code() == grpc.StatusCode.ABORTED


async def test_rollout_inside_min_interval_says_when(client: RegistryClient):
    await client.model("m")
    await client.version("m")
    await client.version("m")
    policy = registry_pb2.ModelPolicy(
        model_name="m",
        allowed_tenants=["team-b", "team-a", "team-a"],
        min_rollout_interval=duration_pb2.Duration(seconds=60),
    )
    stored = (await client.stub.SetPolicy(registry_pb2.SetPolicyRequest(policy=policy))).policy
    assert list(stored.allowed_tenants) == ["team-a", "team-b"]
    await client.deploy("m", (1, 100))  # the first rollout is always allowed
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.deploy("m", (2, 100))
    error = from_rpc_error(info.value)
    assert isinstance(error, FailedPrecondition)
    assert 55 < error.retry_after <= 60
    assert "next allowed at" in error.message
    # Taking a model offline is never rate-limited: it is the emergency brake.
    offline = await client.deploy("m", reason="incident")
    assert not offline.routes


async def test_rollback_bypasses_the_rollout_interval(client: RegistryClient):
    """Issue 21, defect 12: pulling a failed canary waited out the interval."""
    await client.model("m")
    await client.version("m")
    await client.version("m")
    await client.stub.SetPolicy(
        registry_pb2.SetPolicyRequest(
            policy=registry_pb2.ModelPolicy(
                model_name="m", min_rollout_interval=duration_pb2.Duration(seconds=600)
            )
        )
    )
    await client.deploy("m", (1, 90), (2, 10))
    # Moving more traffic to the canary is a rollout: held back by the interval.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.deploy("m", (1, 50), (2, 50), reason="widen")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Taking the canary out is a rollback: allowed at once.
    rolled_back = await client.deploy("m", (1, 100), reason="canary failed")
    assert [(r.version, r.weight) for r in rolled_back.routes] == [(1, 100)]
    # ... and it does not reset into a loophole: the next rollout still waits.
    with pytest.raises(grpc.aio.AioRpcError):
        await client.deploy("m", (1, 90), (2, 10), reason="retry canary")


async def test_rollout_allowed_again_after_the_interval(client: RegistryClient):
    await client.model("m")
    await client.version("m")
    await client.stub.SetPolicy(
        registry_pb2.SetPolicyRequest(
            policy=registry_pb2.ModelPolicy(
                model_name="m", min_rollout_interval=duration_pb2.Duration(nanos=300_000_000)
            )
        )
    )
    await client.deploy("m", (1, 100))
    with pytest.raises(grpc.aio.AioRpcError):
        await client.deploy("m", (1, 100), reason="again")
    await asyncio.sleep(0.35)
    assert (await client.deploy("m", (1, 100), reason="again")).routes


async def test_resolve_returns_policy_and_pins(client: RegistryClient):
    await client.model("m")
    await client.version("m")
    await client.stub.SetPolicy(
        registry_pb2.SetPolicyRequest(
            policy=registry_pb2.ModelPolicy(
                model_name="m", max_new_tokens=16, max_prompt_tokens=512
            )
        )
    )
    resolved = await client.stub.ResolveModel(registry_pb2.ResolveModelRequest(model="m:1"))
    assert resolved.version.version == 1 and resolved.policy.max_new_tokens == 16
    for ref in ("m:2", "m@nope", "other"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await client.stub.ResolveModel(registry_pb2.ResolveModelRequest(model=ref))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, ref
    default = (await client.stub.GetPolicy(registry_pb2.GetPolicyRequest(model_name="m"))).policy
    assert default.max_new_tokens == 16
