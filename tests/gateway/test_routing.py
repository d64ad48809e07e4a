"""Routing: weighted split, sticky keys, pins, shadows, and a registry that goes away."""

from __future__ import annotations

import asyncio
import collections
import math

import grpc
import pytest

from lattice.errors import FailedPrecondition, NotFound
from lattice.refs import parse_model_ref
from lattice.v1 import inference_pb2, registry_pb2
from services.gateway.routing import Router
from services.runtime.registry_view import RegistryView
from tests.gateway.support import bearer, token
from tests.support.identity import signed_channel


@pytest.fixture
async def view(stack):
    """A real RegistryView over a real registry with chat v1/v2/v3 at 90/10, v3 in shadow."""
    stub = await stack.start_registry()
    await stack.model("chat", 3, [(1, 90), (2, 10)], shadow=3)
    await stub.SetAlias(
        registry_pb2.SetAliasRequest(model_name="chat", alias="champion", version=2)
    )
    view = RegistryView(
        stack.registry.address,
        channel=signed_channel(stack.registry.address, stack.tmp / "reg", "registry"),
    )
    await view.start()
    await view.wait_synced(5)
    yield view
    await view.stop()


async def test_weighted_split_is_within_tolerance(view):
    router = Router(view)
    counts = collections.Counter(router.route(parse_model_ref("chat")).version for _ in range(5000))
    assert set(counts) == {1, 2}
    sigma = math.sqrt(5000 * 0.1 * 0.9)  # binomial: about 21
    assert abs(counts[2] - 500) < 5 * sigma, counts


async def test_sticky_keys_stay_on_one_version_and_still_split(view):
    router = Router(view)
    chat = parse_model_ref("chat")
    per_key = {}
    for n in range(400):
        versions = {router.route(chat, f"user-{n}").version for _ in range(10)}
        assert len(versions) == 1
        per_key[n] = versions.pop()
    share = sum(1 for v in per_key.values() if v == 2) / len(per_key)
    assert 0.04 < share < 0.17, share
    # Same key, new Router (another replica, or a restart): same answer.
    again = Router(view)
    assert all(again.route(chat, f"user-{n}").version == v for n, v in per_key.items())


async def test_pins_are_always_honoured(view):
    router = Router(view)
    for text, version in (("chat:2", 2), ("chat@champion", 2), ("chat:1", 1), ("chat:3", 3)):
        decisions = {router.route(parse_model_ref(text)).version for _ in range(200)}
        assert decisions == {version}, text
    decision = router.route(parse_model_ref("chat"))
    assert decision.shadow_version == 3
    assert router.route(parse_model_ref("chat:2")).shadow_version == 0  # pins are not mirrored
    with pytest.raises(NotFound):
        router.route(parse_model_ref("chat:7"))
    with pytest.raises(NotFound):
        router.route(parse_model_ref("nope"))


async def test_offline_version_and_model_are_failed_precondition(stack, view):
    await stack.registry_stub.UpdateDeployment(
        registry_pb2.UpdateDeploymentRequest(
            model_name="chat", routes=[registry_pb2.Route(version=1, weight=100)]
        )
    )
    for _ in range(100):
        if view.deployment("chat").shadow_version == 0:
            break
        await asyncio.sleep(0.02)
    router = Router(view)
    with pytest.raises(FailedPrecondition):
        router.route(parse_model_ref("chat:2"))
    await stack.registry_stub.UpdateDeployment(
        registry_pb2.UpdateDeploymentRequest(model_name="chat", routes=[])
    )
    for _ in range(100):
        if not view.deployment("chat").routes:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(FailedPrecondition):
        router.route(parse_model_ref("chat"))


async def test_gateway_routes_shadows_and_survives_registry_loss(stack):
    await stack.start_registry()
    await stack.model("chat", 2, [(1, 100)], shadow=2)
    (echo,) = await stack.start_inference(1)
    gateway = await stack.start_gateway()
    stub = stack.inference_stub(gateway)
    acme = bearer(token())
    request = inference_pb2.GenerateRequest(model="chat", prompt="one two")
    response = await stub.Generate(request, metadata=acme)
    assert (response.model_name, response.model_version) == ("chat", 1)
    await gateway.gateway.settle()
    # The shadow copy reached version 2 in the background; the caller saw only v1.
    assert sorted(r.model for r in echo.requests) == ["chat:1", "chat:2"]

    # Deployment changes arrive through Watch; no registry call on the request path.
    await stack.registry_stub.UpdateDeployment(
        registry_pb2.UpdateDeploymentRequest(
            model_name="chat", routes=[registry_pb2.Route(version=2, weight=100)]
        )
    )
    for _ in range(100):
        response = await stub.Generate(request, metadata=acme)
        if response.model_version == 2:
            break
        await asyncio.sleep(0.02)
    assert response.model_version == 2

    # Registry gone: routing continues on the last known view.
    await stack.registry.stop(0)
    stack.registry = None
    for _ in range(20):
        response = await stub.Generate(request, metadata=acme)
        assert response.model_version == 2


async def test_unknown_model_before_first_sync_is_unavailable(stack):
    await stack.start_inference(1)
    gateway = await stack.start_gateway(registry_sync_timeout=0.1)  # registry never answers
    stub = stack.inference_stub(gateway)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(
            inference_pb2.GenerateRequest(model="chat", prompt="x"), metadata=bearer(token())
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_weighted_routing_skips_a_version_no_replica_has_ready(stack):
    """Issue 21, defect 5: after a failed canary, its share of requests got UNAVAILABLE."""
    await stack.start_registry()
    await stack.model("chat", 2, [(1, 50), (2, 50)])
    replicas = await stack.start_inference(2, unavailable_versions=(2,), loaded=(("chat", 1),))
    gateway = await stack.start_gateway(replica_poll_seconds=0.05)
    stub = stack.inference_stub(gateway)
    acme = bearer(token())
    await asyncio.sleep(0.3)  # a few polls of ListLoadedModels
    request = inference_pb2.GenerateRequest(model="chat", prompt="one two")
    versions = [(await stub.Generate(request, metadata=acme)).model_version for _ in range(40)]
    assert versions == [1] * 40
    # Once a replica reports version 2 READY, it gets its share again.
    replicas[0].loaded = (("chat", 1), ("chat", 2))
    replicas[0].unavailable_versions = ()
    replicas[1].unavailable_versions = ()
    await asyncio.sleep(0.3)
    versions = [(await stub.Generate(request, metadata=acme)).model_version for _ in range(40)]
    assert set(versions) == {1, 2}


async def test_a_replica_that_refuses_the_poll_still_counts_as_alive(stack):
    """Only silence takes a replica out of rotation: one that answers the poll with an
    error (say, it wants another identity) is alive, its versions just unknown."""
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    (echo,) = await stack.start_inference(1)
    echo.refuse_polls = True
    gateway = await stack.start_gateway(replica_poll_seconds=0.05)
    await asyncio.sleep(0.3)
    (replica,) = gateway.gateway._inference.replicas
    assert not replica.unresponsive
    stub = stack.inference_stub(gateway)
    request = inference_pb2.GenerateRequest(model="chat", prompt="one")
    assert (await stub.Generate(request, metadata=bearer(token()))).model_version == 1
