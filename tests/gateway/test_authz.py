"""Authorisation through a real gateway: scopes per RPC, tenant allowlists, open health."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lattice.v1 import (
    inference_pb2,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.gateway.authz import METHOD_SCOPES
from services.runtime.internal_tokens import CallerVerifier
from tests.gateway.support import bearer, token
from tests.support.identity import key_ring


def test_every_served_method_has_a_scope():
    served = {
        f"/{service.full_name}/{method.name}"
        for module, name in (
            (inference_pb2, "InferenceService"),
            (registry_pb2, "ModelRegistryService"),
            (trainer_pb2, "TrainerService"),
        )
        for service in [module.DESCRIPTOR.services_by_name[name]]
        for method in service.methods
    }
    assert served == set(METHOD_SCOPES)


async def _code(awaitable) -> grpc.StatusCode:
    try:
        await awaitable
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_scopes_tenants_and_forwarding(stack):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)], owner="acme")
    await stack.model("private", 1, [(1, 100)], tenants=("acme",))
    (echo,) = await stack.start_inference(1)
    gateway = await stack.start_gateway()
    channel = stack.channel(gateway.address)
    inference = stack.inference_stub(gateway)
    registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
    generate = inference_pb2.GenerateRequest(model="chat", prompt="hello there")

    # Identity headers a caller sends itself are never forwarded (no spoofing).
    invoke = [
        *bearer(token("acme", ["inference:invoke"], subject="alice")),
        ("x-lattice-tenant", "evil"),
        ("x-lattice-subject", "mallory"),
    ]
    reader = bearer(token("acme", ["registry:read"]))
    writer = bearer(token("acme", ["registry:read", "registry:write"], subject="bob"))
    admin = bearer(token("acme", ["admin"]))
    other_tenant = bearer(token("globex", ["inference:invoke"]))

    ok, denied = grpc.StatusCode.OK, grpc.StatusCode.PERMISSION_DENIED
    assert await _code(inference.Generate(generate, metadata=invoke)) == ok
    assert await _code(inference.Generate(generate, metadata=reader)) == denied
    assert await _code(inference.Generate(generate, metadata=admin)) == ok
    assert (
        await _code(
            inference.ListLoadedModels(inference_pb2.ListLoadedModelsRequest(), metadata=invoke)
        )
        == denied
    )
    assert (
        await _code(
            inference.ListLoadedModels(inference_pb2.ListLoadedModelsRequest(), metadata=admin)
        )
        == ok
    )

    # The model's tenant allowlist (from registry policy, via the local view).
    private = inference_pb2.GenerateRequest(model="private", prompt="x")
    assert await _code(inference.Generate(private, metadata=invoke)) == ok
    assert await _code(inference.Generate(private, metadata=other_tenant)) == denied
    assert await _code(inference.Generate(generate, metadata=other_tenant)) == ok

    # What reached inference: the pinned version and an internal token for inference
    # naming alice of acme; never the user's token, never bare identity headers.
    forwarded = echo.requests[0]
    assert forwarded.model == "chat:1"
    sent = echo.metadata[0]
    verifier = CallerVerifier(key_ring(stack.tmp / "reg"), audience="inference")
    caller = verifier.verify(sent["authorization"])
    assert (caller.tenant, caller.subject) == ("acme", "alice")
    assert sent["authorization"] != dict(invoke)["authorization"]
    assert not {"x-lattice-subject", "x-lattice-tenant"} & set(sent)
    assert sent.get("x-request-id")

    # Registry RPCs are forwarded after the scope check, with the caller's tenant,
    # subject and scopes (bob of acme manages acme's "chat").
    listing = registry_pb2.ListModelsRequest()
    assert await _code(registry.ListModels(listing, metadata=reader)) == ok
    assert await _code(registry.ListModels(listing, metadata=invoke)) == denied
    create = registry_pb2.CreateModelRequest(model=registry_pb2.Model(name="made-by-bob", task=1))
    assert await _code(registry.CreateModel(create, metadata=reader)) == denied
    assert await _code(registry.CreateModel(create, metadata=writer)) == ok
    policy = registry_pb2.SetPolicyRequest(policy=registry_pb2.ModelPolicy(model_name="chat"))
    assert await _code(registry.SetPolicy(policy, metadata=writer)) == denied
    deploy = registry_pb2.UpdateDeploymentRequest(
        model_name="chat", routes=[registry_pb2.Route(version=1, weight=100)], reason="t"
    )
    updated = await registry.UpdateDeployment(deploy, metadata=writer)
    assert updated.deployment.updated_by == "bob"
    # Server streaming is forwarded too.
    watch = registry.Watch(registry_pb2.WatchRequest(), metadata=reader)
    first = await watch.read()
    assert first.type == registry_pb2.WATCH_EVENT_TYPE_RESET
    watch.cancel()

    # A trainer that is down: the scope is checked first, then UNAVAILABLE.
    jobs = trainer_pb2.ListJobsRequest()
    assert await _code(trainer.ListJobs(jobs, metadata=reader)) == denied
    trainer_reader = bearer(token("acme", ["trainer:read"]))
    assert await _code(trainer.ListJobs(jobs, metadata=trainer_reader)) == (
        grpc.StatusCode.UNAVAILABLE
    )

    # Bad references and unknown models get their own codes.
    for model, code in (
        ("Bad Name", grpc.StatusCode.INVALID_ARGUMENT),
        ("missing", grpc.StatusCode.NOT_FOUND),
        ("chat:9", grpc.StatusCode.NOT_FOUND),
        ("chat@nope", grpc.StatusCode.NOT_FOUND),
    ):
        request = inference_pb2.GenerateRequest(model=model, prompt="x")
        assert await _code(inference.Generate(request, metadata=invoke)) == code, model

    # Metrics: requests by tenant/model/code, rejections by stage/reason, upstream health.
    sample = gateway.metrics_registry.get_sample_value
    labels = {"tenant": "acme", "model": "chat", "code": "OK"}
    assert sample("lattice_gateway_requests_total", labels) >= 2
    denied_tenant = {"tenant": "globex", "model": "private", "code": "PERMISSION_DENIED"}
    assert sample("lattice_gateway_requests_total", denied_tenant) == 1
    assert sample("lattice_gateway_rejections_total", {"stage": "authz", "reason": "scope"}) >= 3
    assert sample("lattice_gateway_rejections_total", {"stage": "authz", "reason": "tenant"}) == 1
    address = stack.inference[0][0].address
    assert sample("lattice_gateway_upstream_healthy", {"address": address}) == 1

    # Health needs no token.
    health = health_pb2_grpc.HealthStub(channel)
    status = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert status.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("reflection", [True, False])
async def test_reflection_is_a_setting(stack, reflection):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    await stack.start_inference(1)
    gateway = await stack.start_gateway(reflection=reflection, registry_sync_timeout=0.1)
    stub = reflection_pb2_grpc.ServerReflectionStub(stack.channel(gateway.address))
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    if reflection:
        response = await call.read()
        names = {s.name for s in response.list_services_response.service}
        assert "lattice.v1.InferenceService" in names
    else:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
