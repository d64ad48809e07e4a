"""Bad input to every RPC gets the right status code and names the field.

Table-driven cases for each RPC, then property-based ones (hypothesis) that
throw arbitrary strings and integers at every field: whatever comes in, the
answer is a deliberate code, never UNKNOWN or INTERNAL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import duration_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from lattice.artifacts import sha256_hex
from lattice.errors import from_rpc_error
from lattice.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.registry.server import build_server
from tests.registry.conftest import settings_for
from tests.support.identity import sync_caller_channel

pb = registry_pb2
C = grpc.StatusCode
TEXT = common_pb2.MODEL_TASK_TEXT_GENERATION
TRANSFORMERS = common_pb2.ARTIFACT_FORMAT_TRANSFORMERS
HEX = "a" * 64
NEVER = {C.UNKNOWN, C.INTERNAL, C.UNIMPLEMENTED}


@pytest.fixture(scope="module")
def stub(tmp_path_factory) -> Iterator[registry_pb2_grpc.ModelRegistryServiceStub]:
    """A registry in its own thread and loop (hypothesis needs a module-wide server),
    seeded with model "m" whose version 1 is online."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    data_dir = tmp_path_factory.mktemp("registry")
    settings_ = settings_for(data_dir)
    server = asyncio.run_coroutine_threadsafe(build_server(settings_), loop).result(30)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    channel = sync_caller_channel(server)
    stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    stub.CreateModel(pb.CreateModelRequest(model=pb.Model(name="m", task=TEXT)))
    data = b"artifact"
    digest = sha256_hex(data)
    stub.UploadArtifact(
        iter(
            [
                pb.UploadArtifactRequest(
                    header=pb.ArtifactHeader(digest=digest, size_bytes=len(data))
                ),
                pb.UploadArtifactRequest(chunk=data),
            ]
        )
    )
    stub.CreateVersion(
        pb.CreateVersionRequest(
            model_name="m",
            artifact_uri=f"lattice-artifact://sha256/{digest}",
            artifact_digest=digest,
            format=TRANSFORMERS,
        )
    )
    stub.UpdateDeployment(
        pb.UpdateDeploymentRequest(model_name="m", routes=[pb.Route(version=1, weight=100)])
    )
    yield stub
    channel.close()
    asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _call(stub, method: str, request) -> grpc.StatusCode:
    try:
        result = getattr(stub, method)(request, timeout=10)
        if method in ("Watch", "DownloadArtifact"):
            next(iter(result))
            result.cancel()
    except grpc.RpcError as error:
        assert error.code() not in NEVER, (method, request, error.details())
        return error.code()
    return C.OK


def _field(stub, method: str, request) -> str:
    try:
        result = getattr(stub, method)(request, timeout=10)
        if method in ("Watch", "DownloadArtifact"):
            next(iter(result))
    except grpc.RpcError as error:
        return getattr(from_rpc_error(error), "field", "")
    return ""


LONG = "x" * 5000
CASES = [
    # CreateModel
    ("CreateModel", pb.CreateModelRequest(), C.INVALID_ARGUMENT, "model.name"),
    (
        "CreateModel",
        pb.CreateModelRequest(model=pb.Model(name="Bad_Name", task=TEXT)),
        C.INVALID_ARGUMENT,
        "model.name",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model=pb.Model(name="a" * 64, task=TEXT)),
        C.INVALID_ARGUMENT,
        "model.name",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model=pb.Model(name="ok")),
        C.INVALID_ARGUMENT,
        "model.task",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model=pb.Model(name="ok", task=99)),
        C.INVALID_ARGUMENT,
        "model.task",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model=pb.Model(name="ok", task=TEXT, description=LONG)),
        C.INVALID_ARGUMENT,
        "model.description",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model=pb.Model(name="ok", task=TEXT, labels={"Not Dns": "v"})),
        C.INVALID_ARGUMENT,
        "model.labels['Not Dns']",
    ),
    (
        "CreateModel",
        pb.CreateModelRequest(model=pb.Model(name="m", task=TEXT)),
        C.ALREADY_EXISTS,
        "",
    ),
    # GetModel / DeleteModel
    ("GetModel", pb.GetModelRequest(), C.INVALID_ARGUMENT, "name"),
    ("GetModel", pb.GetModelRequest(name="nope"), C.NOT_FOUND, ""),
    ("DeleteModel", pb.DeleteModelRequest(name="UPPER"), C.INVALID_ARGUMENT, "name"),
    ("DeleteModel", pb.DeleteModelRequest(name="nope"), C.NOT_FOUND, ""),
    ("DeleteModel", pb.DeleteModelRequest(name="m"), C.FAILED_PRECONDITION, ""),
    # ListModels / ListDeployments
    ("ListModels", pb.ListModelsRequest(page_size=-1), C.INVALID_ARGUMENT, "page_size"),
    ("ListModels", pb.ListModelsRequest(page_size=5000), C.INVALID_ARGUMENT, "page_size"),
    ("ListModels", pb.ListModelsRequest(page_token="garbage!"), C.INVALID_ARGUMENT, "page_token"),
    (
        "ListDeployments",
        pb.ListDeploymentsRequest(page_token="eyJrIjoieCJ9"),
        C.INVALID_ARGUMENT,
        "page_token",
    ),
    # CreateVersion
    ("CreateVersion", pb.CreateVersionRequest(), C.INVALID_ARGUMENT, "model_name"),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m", artifact_uri="https://127.0.0.1:9000/b/k", artifact_digest=HEX
        ),
        C.INVALID_ARGUMENT,
        "format",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(model_name="m", format=TRANSFORMERS, artifact_digest=HEX),
        C.INVALID_ARGUMENT,
        "artifact_uri",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m", format=TRANSFORMERS, artifact_uri="no scheme", artifact_digest=HEX
        ),
        C.INVALID_ARGUMENT,
        "artifact_uri",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m",
            format=TRANSFORMERS,
            artifact_uri="https://127.0.0.1:9000/b/k",
            artifact_digest="ABC",
        ),
        C.INVALID_ARGUMENT,
        "artifact_digest",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m",
            format=TRANSFORMERS,
            artifact_uri="https://127.0.0.1:9000/b/k",
            artifact_digest=HEX,
            metrics={"loss": float("nan")},
        ),
        C.INVALID_ARGUMENT,
        "metrics['loss']",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m",
            format=TRANSFORMERS,
            artifact_uri="https://127.0.0.1:9000/b/k",
            artifact_digest=HEX,
            lineage=pb.Lineage(base_version=-3),
        ),
        C.INVALID_ARGUMENT,
        "lineage.base_version",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m",
            format=TRANSFORMERS,
            artifact_uri="https://127.0.0.1:9000/b/k",
            artifact_digest=HEX,
            lineage=pb.Lineage(dataset_digest="xyz"),
        ),
        C.INVALID_ARGUMENT,
        "lineage.dataset_digest",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m",
            format=TRANSFORMERS,
            artifact_uri="https://127.0.0.1:9000/b/k",
            artifact_digest=HEX,
            lineage=pb.Lineage(base_version=7),
        ),
        C.NOT_FOUND,
        "",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m",
            format=TRANSFORMERS,
            artifact_uri="https://127.0.0.1:9000/b/k",
            artifact_digest=HEX,
            params={"p": LONG},
        ),
        C.INVALID_ARGUMENT,
        "params['p']",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="nope",
            format=TRANSFORMERS,
            artifact_uri="https://127.0.0.1:9000/b/k",
            artifact_digest=HEX,
        ),
        C.NOT_FOUND,
        "",
    ),
    (
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="m",
            format=TRANSFORMERS,
            artifact_uri=f"lattice-artifact://sha256/{HEX}",
            artifact_digest=HEX,
        ),
        C.NOT_FOUND,
        "",
    ),
    # GetVersion / ListVersions
    ("GetVersion", pb.GetVersionRequest(model_name="m"), C.INVALID_ARGUMENT, "version"),
    ("GetVersion", pb.GetVersionRequest(model_name="m", version=-5), C.INVALID_ARGUMENT, "version"),
    ("GetVersion", pb.GetVersionRequest(model_name="m", version=2**62), C.NOT_FOUND, ""),
    ("GetVersion", pb.GetVersionRequest(version=1), C.INVALID_ARGUMENT, "model_name"),
    ("ListVersions", pb.ListVersionsRequest(), C.INVALID_ARGUMENT, "model_name"),
    (
        "ListVersions",
        pb.ListVersionsRequest(model_name="m", page_token="x"),
        C.INVALID_ARGUMENT,
        "page_token",
    ),
    # UpdateVersionStatus
    (
        "UpdateVersionStatus",
        pb.UpdateVersionStatusRequest(model_name="m", version=1),
        C.INVALID_ARGUMENT,
        "status",
    ),
    (
        "UpdateVersionStatus",
        pb.UpdateVersionStatusRequest(model_name="m", version=1, status=7),
        C.INVALID_ARGUMENT,
        "status",
    ),
    (
        "UpdateVersionStatus",
        pb.UpdateVersionStatusRequest(model_name="m", status=pb.VERSION_STATUS_ARCHIVED),
        C.INVALID_ARGUMENT,
        "version",
    ),
    (
        "UpdateVersionStatus",
        pb.UpdateVersionStatusRequest(model_name="m", version=3, status=pb.VERSION_STATUS_ARCHIVED),
        C.NOT_FOUND,
        "",
    ),
    (
        "UpdateVersionStatus",
        pb.UpdateVersionStatusRequest(model_name="m", version=1, status=pb.VERSION_STATUS_ARCHIVED),
        C.FAILED_PRECONDITION,
        "",
    ),
    # DownloadArtifact
    ("DownloadArtifact", pb.DownloadArtifactRequest(), C.INVALID_ARGUMENT, "digest"),
    (
        "DownloadArtifact",
        pb.DownloadArtifactRequest(digest="../../etc/passwd"),
        C.INVALID_ARGUMENT,
        "digest",
    ),
    ("DownloadArtifact", pb.DownloadArtifactRequest(digest=HEX), C.NOT_FOUND, ""),
    # Aliases
    ("SetAlias", pb.SetAliasRequest(model_name="m", version=1), C.INVALID_ARGUMENT, "alias"),
    (
        "SetAlias",
        pb.SetAliasRequest(model_name="m", alias="123", version=1),
        C.INVALID_ARGUMENT,
        "alias",
    ),
    ("SetAlias", pb.SetAliasRequest(model_name="m", alias="a"), C.INVALID_ARGUMENT, "version"),
    ("SetAlias", pb.SetAliasRequest(model_name="m", alias="a", version=9), C.NOT_FOUND, ""),
    (
        "SetAlias",
        pb.SetAliasRequest(model_name="m", alias="a", version=1, expected_revision=-1),
        C.INVALID_ARGUMENT,
        "expected_revision",
    ),
    (
        "SetAlias",
        pb.SetAliasRequest(model_name="m", alias="a", version=1, expected_revision=999),
        C.ABORTED,
        "",
    ),
    ("DeleteAlias", pb.DeleteAliasRequest(model_name="m", alias="none"), C.NOT_FOUND, ""),
    ("DeleteAlias", pb.DeleteAliasRequest(model_name="m"), C.INVALID_ARGUMENT, "alias"),
    ("ListAliases", pb.ListAliasesRequest(), C.INVALID_ARGUMENT, "model_name"),
    ("ListAliases", pb.ListAliasesRequest(model_name="nope"), C.NOT_FOUND, ""),
    # ResolveModel
    ("ResolveModel", pb.ResolveModelRequest(), C.INVALID_ARGUMENT, "model"),
    ("ResolveModel", pb.ResolveModelRequest(model="m:0"), C.INVALID_ARGUMENT, "model"),
    ("ResolveModel", pb.ResolveModelRequest(model="m:x"), C.INVALID_ARGUMENT, "model"),
    ("ResolveModel", pb.ResolveModelRequest(model="m@"), C.INVALID_ARGUMENT, "model"),
    ("ResolveModel", pb.ResolveModelRequest(model=LONG), C.INVALID_ARGUMENT, "model"),
    ("ResolveModel", pb.ResolveModelRequest(model="m@missing"), C.NOT_FOUND, ""),
    # Deployments
    ("GetDeployment", pb.GetDeploymentRequest(), C.INVALID_ARGUMENT, "model_name"),
    ("GetDeployment", pb.GetDeploymentRequest(model_name="nope"), C.NOT_FOUND, ""),
    ("UpdateDeployment", pb.UpdateDeploymentRequest(), C.INVALID_ARGUMENT, "model_name"),
    (
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(model_name="m", routes=[pb.Route(version=1, weight=101)]),
        C.INVALID_ARGUMENT,
        "routes[0].weight",
    ),
    (
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(model_name="m", routes=[pb.Route(version=0, weight=100)]),
        C.INVALID_ARGUMENT,
        "routes[0].version",
    ),
    (
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(
            model_name="m", routes=[pb.Route(version=1, weight=50), pb.Route(version=1, weight=50)]
        ),
        C.INVALID_ARGUMENT,
        "routes[1].version",
    ),
    (
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(model_name="m", routes=[pb.Route(version=1, weight=99)]),
        C.INVALID_ARGUMENT,
        "routes",
    ),
    (
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(
            model_name="m", routes=[pb.Route(version=1, weight=100)], shadow_version=-1
        ),
        C.INVALID_ARGUMENT,
        "shadow_version",
    ),
    (
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(
            model_name="m", routes=[pb.Route(version=1, weight=100)], reason=LONG
        ),
        C.INVALID_ARGUMENT,
        "reason",
    ),
    (
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(
            model_name="m", routes=[pb.Route(version=1, weight=100)], expected_revision=10**9
        ),
        C.ABORTED,
        "",
    ),
    (
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(model_name="m", routes=[pb.Route(version=5, weight=100)]),
        C.NOT_FOUND,
        "",
    ),
    (
        "ListDeploymentHistory",
        pb.ListDeploymentHistoryRequest(model_name="-bad"),
        C.INVALID_ARGUMENT,
        "model_name",
    ),
    (
        "ListDeploymentHistory",
        pb.ListDeploymentHistoryRequest(page_size=-2),
        C.INVALID_ARGUMENT,
        "page_size",
    ),
    (
        "ListDeploymentHistory",
        pb.ListDeploymentHistoryRequest(page_token="e30"),
        C.INVALID_ARGUMENT,
        "page_token",
    ),
    # Policy
    ("GetPolicy", pb.GetPolicyRequest(), C.INVALID_ARGUMENT, "model_name"),
    ("GetPolicy", pb.GetPolicyRequest(model_name="nope"), C.NOT_FOUND, ""),
    ("SetPolicy", pb.SetPolicyRequest(), C.INVALID_ARGUMENT, "policy.model_name"),
    ("SetPolicy", pb.SetPolicyRequest(policy=pb.ModelPolicy(model_name="nope")), C.NOT_FOUND, ""),
    (
        "SetPolicy",
        pb.SetPolicyRequest(policy=pb.ModelPolicy(model_name="m", allowed_tenants=[""])),
        C.INVALID_ARGUMENT,
        "policy.allowed_tenants[0]",
    ),
    (
        "SetPolicy",
        pb.SetPolicyRequest(policy=pb.ModelPolicy(model_name="m", max_new_tokens=2**32 - 1)),
        C.INVALID_ARGUMENT,
        "policy.max_new_tokens",
    ),
    (
        "SetPolicy",
        pb.SetPolicyRequest(
            policy=pb.ModelPolicy(
                model_name="m", min_rollout_interval=duration_pb2.Duration(seconds=-1)
            )
        ),
        C.INVALID_ARGUMENT,
        "policy.min_rollout_interval",
    ),
    (
        "SetPolicy",
        pb.SetPolicyRequest(
            policy=pb.ModelPolicy(
                model_name="m", min_rollout_interval=duration_pb2.Duration(seconds=10**9)
            )
        ),
        C.INVALID_ARGUMENT,
        "policy.min_rollout_interval",
    ),
    (
        "SetPolicy",
        pb.SetPolicyRequest(policy=pb.ModelPolicy(model_name="m"), expected_revision=-4),
        C.INVALID_ARGUMENT,
        "expected_revision",
    ),
    # Tenant records
    ("CreateTenant", pb.CreateTenantRequest(), C.INVALID_ARGUMENT, "tenant.name"),
    (
        "CreateTenant",
        pb.CreateTenantRequest(tenant=pb.Tenant(name="a/b")),
        C.INVALID_ARGUMENT,
        "tenant.name",
    ),
    (
        "CreateTenant",
        pb.CreateTenantRequest(
            tenant=pb.Tenant(name="t", model_quotas={"NOT OK": pb.TenantQuota(requests=1)})
        ),
        C.INVALID_ARGUMENT,
        "tenant.model_quotas",
    ),
    ("GetTenant", pb.GetTenantRequest(), C.INVALID_ARGUMENT, "name"),
    ("GetTenant", pb.GetTenantRequest(name="nobody"), C.NOT_FOUND, ""),
    ("ListTenants", pb.ListTenantsRequest(page_size=-1), C.INVALID_ARGUMENT, "page_size"),
    ("ListTenants", pb.ListTenantsRequest(page_token="garbage!"), C.INVALID_ARGUMENT, "page_token"),
    ("UpdateTenant", pb.UpdateTenantRequest(), C.INVALID_ARGUMENT, "tenant.name"),
    ("UpdateTenant", pb.UpdateTenantRequest(tenant=pb.Tenant(name="nobody")), C.NOT_FOUND, ""),
    (
        "UpdateTenant",
        pb.UpdateTenantRequest(tenant=pb.Tenant(name="nobody"), expected_revision=-1),
        C.INVALID_ARGUMENT,
        "expected_revision",
    ),
    # ReportVersionLoad
    ("ReportVersionLoad", pb.ReportVersionLoadRequest(), C.INVALID_ARGUMENT, "model_name"),
    (
        "ReportVersionLoad",
        pb.ReportVersionLoadRequest(model_name="m", version=0, reason="r"),
        C.INVALID_ARGUMENT,
        "version",
    ),
    (
        "ReportVersionLoad",
        pb.ReportVersionLoadRequest(model_name="m", version=1),
        C.INVALID_ARGUMENT,
        "reason",
    ),
    (
        "ReportVersionLoad",
        pb.ReportVersionLoadRequest(model_name="m", version=1, reason="r", replica="h" * 300),
        C.INVALID_ARGUMENT,
        "replica",
    ),
    (
        "ReportVersionLoad",
        pb.ReportVersionLoadRequest(model_name="m", version=99, reason="r"),
        C.NOT_FOUND,
        "",
    ),
    # Watch
    ("Watch", pb.WatchRequest(from_revision=-1), C.INVALID_ARGUMENT, "from_revision"),
    ("Watch", pb.WatchRequest(model_names=["ok", "NOT OK"]), C.INVALID_ARGUMENT, "model_names[1]"),
]


@pytest.mark.parametrize(
    ("method", "request_", "code", "field"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_bad_input_gets_the_right_code(stub, method, request_, code, field):
    assert _call(stub, method, request_) == code
    if field:
        assert _field(stub, method, request_) == field


def test_every_rpc_has_bad_input_cases():
    methods = registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].methods_by_name
    covered = {case[0] for case in CASES} | {"UploadArtifact"}  # upload: test_artifacts.py
    assert set(methods) == covered


names = st.text(max_size=80)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
small = st.integers(min_value=-(2**31), max_value=2**31 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
quick = settings(max_examples=40, deadline=None)


@quick
@given(name=names, version=ints, size=small, token=st.text(max_size=40))
def test_reads_never_fail_unexpectedly(stub, name, version, size, token):
    _call(stub, "GetModel", pb.GetModelRequest(name=name))
    _call(stub, "GetVersion", pb.GetVersionRequest(model_name=name, version=version))
    _call(
        stub,
        "ListVersions",
        pb.ListVersionsRequest(model_name=name, page_size=size, page_token=token),
    )
    _call(stub, "ListModels", pb.ListModelsRequest(page_size=size, page_token=token))
    _call(stub, "ResolveModel", pb.ResolveModelRequest(model=name))
    _call(stub, "GetDeployment", pb.GetDeploymentRequest(model_name=name))
    _call(stub, "GetPolicy", pb.GetPolicyRequest(model_name=name))
    _call(stub, "ListAliases", pb.ListAliasesRequest(model_name=name))
    _call(stub, "DownloadArtifact", pb.DownloadArtifactRequest(digest=name))
    _call(
        stub,
        "ListDeploymentHistory",
        pb.ListDeploymentHistoryRequest(model_name=name, page_size=size, page_token=token),
    )


@quick
@given(
    routes=st.lists(st.tuples(ints, u32), max_size=40),
    shadow=ints,
    expected=ints,
    alias=names,
    tokens=u32,
    seconds=st.integers(min_value=-(10**12), max_value=10**12),
    nanos=small,
)
def test_writes_never_fail_unexpectedly(
    stub, routes, shadow, expected, alias, tokens, seconds, nanos
):
    # Against model "n" (created here, never online) so a success changes nothing "m" needs.
    _call(stub, "CreateModel", pb.CreateModelRequest(model=pb.Model(name="n", task=TEXT)))
    _call(
        stub,
        "UpdateDeployment",
        pb.UpdateDeploymentRequest(
            model_name="n",
            routes=[pb.Route(version=v, weight=w) for v, w in routes],
            shadow_version=shadow,
            expected_revision=expected,
        ),
    )
    _call(
        stub,
        "SetAlias",
        pb.SetAliasRequest(model_name="m", alias=alias, version=shadow, expected_revision=expected),
    )
    _call(
        stub,
        "SetPolicy",
        pb.SetPolicyRequest(
            policy=pb.ModelPolicy(
                model_name="n",
                max_new_tokens=tokens,
                max_prompt_tokens=tokens,
                allowed_tenants=[alias],
                min_rollout_interval=duration_pb2.Duration(seconds=seconds, nanos=nanos),
            ),
            expected_revision=expected,
        ),
    )
    _call(
        stub,
        "CreateVersion",
        pb.CreateVersionRequest(
            model_name="n",
            artifact_uri=alias,
            artifact_digest=alias,
            format=tokens % 4,
            lineage=pb.Lineage(base_version=shadow, base_model_name=alias),
        ),
    )
    _call(stub, "Watch", pb.WatchRequest(from_revision=expected, model_names=[alias]))
