"""Two tenants and an administrator over every registry and trainer RPC, through a real
gateway in front of a real registry and a real trainer: each tenant sees only its own
models, versions, aliases, deployments, history, artifacts, datasets and jobs; the other
tenant's are NOT_FOUND (never PERMISSION_DENIED, which would confirm they exist) and
missing from listings; the admin sees and manages both. Checked both ways."""

from __future__ import annotations

import dataclasses
import os

import grpc
import pytest
from grpc import aio

from lattice.artifacts import sha256_hex
from lattice.tokens import TENANT_SCOPES
from lattice.v1 import (
    common_pb2,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.trainer.server import TrainerSettings
from services.trainer.server import build_server as build_trainer
from tests.gateway.support import Stack, bearer, token
from tests.registry.support import upload_messages

TEXT = common_pb2.MODEL_TASK_TEXT_GENERATION
TRANSFORMERS = common_pb2.ARTIFACT_FORMAT_TRANSFORMERS
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@dataclasses.dataclass
class Tenant:
    name: str
    metadata: list[tuple[str, str]]
    registry: registry_pb2_grpc.ModelRegistryServiceStub
    trainer: trainer_pb2_grpc.TrainerServiceStub
    model: str = ""
    digest: str = ""
    dataset_id: str = ""
    job_id: str = ""

    async def reg(self, method: str, request):
        return await getattr(self.registry, method)(request, metadata=self.metadata)

    async def train(self, method: str, request):
        return await getattr(self.trainer, method)(request, metadata=self.metadata)


@dataclasses.dataclass
class World:
    acme: Tenant
    globex: Tenant
    admin: Tenant


def _tenant(stack: Stack, gateway, name: str, scopes) -> Tenant:
    channel = stack.channel(gateway.address)
    return Tenant(
        name,
        bearer(token(name, scopes=scopes, subject=f"{name}-user")),
        registry_pb2_grpc.ModelRegistryServiceStub(channel),
        trainer_pb2_grpc.TrainerServiceStub(channel),
    )


async def _own_everything(tenant: Tenant) -> None:
    """A model with a version, an alias, a deployment (so history), a dataset and a job."""
    # Names that do not contain the tenant's, so no message can give it away by accident.
    tenant.model = {"acme": "orchid", "globex": "tulip"}[tenant.name]
    await tenant.reg(
        "CreateModel",
        registry_pb2.CreateModelRequest(model=registry_pb2.Model(name=tenant.model, task=TEXT)),
    )
    data = os.urandom(2048)
    tenant.digest = sha256_hex(data)
    uploaded = await tenant.registry.UploadArtifact(upload_messages(data), metadata=tenant.metadata)
    await tenant.reg(
        "CreateVersion",
        registry_pb2.CreateVersionRequest(
            model_name=tenant.model,
            artifact_uri=uploaded.artifact_uri,
            artifact_digest=tenant.digest,
            format=TRANSFORMERS,
        ),
    )
    await tenant.reg(
        "SetAlias", registry_pb2.SetAliasRequest(model_name=tenant.model, alias="prod", version=1)
    )
    await tenant.reg(
        "UpdateDeployment",
        registry_pb2.UpdateDeploymentRequest(
            model_name=tenant.model, routes=[registry_pb2.Route(version=1, weight=100)]
        ),
    )
    spec = trainer_pb2.DatasetSpec(
        name="docs",
        sources=[trainer_pb2.DataSource(builtin="python-docstrings")],
        tokenizer=trainer_pb2.TokenizerOptions(
            kind=trainer_pb2.TOKENIZER_KIND_BYTE_LEVEL_BPE, vocab_size=300
        ),
        seed=1,
    )
    prepared = await tenant.train("PrepareDataset", trainer_pb2.PrepareDatasetRequest(spec=spec))
    tenant.dataset_id = prepared.dataset.id
    job = await tenant.train(
        "SubmitJob",
        trainer_pb2.SubmitJobRequest(spec=_job_spec(tenant.dataset_id), request_id="nightly"),
    )
    tenant.job_id = job.job.id


def _job_spec(dataset_id: str) -> trainer_pb2.JobSpec:
    return trainer_pb2.JobSpec(
        family=trainer_pb2.MODEL_FAMILY_GPT2_CAUSAL_LM,
        dataset_id=dataset_id,
        architecture=trainer_pb2.ModelArchitecture(
            num_layers=1, num_heads=2, hidden_size=32, max_positions=32
        ),
        hyperparameters=trainer_pb2.Hyperparameters(batch_size=2, sequence_length=16, max_steps=1),
        distributed=trainer_pb2.DistributedConfig(processes_per_node=1),
        registration=trainer_pb2.RegistrationSpec(model_name="never-registered"),
    )


@pytest.fixture
async def world(stack: Stack, tmp_path) -> World:
    await stack.start_registry()
    await stack.start_inference(1)
    # Jobs start `/bin/false` instead of torchrun: they exist, queue and fail at once,
    # which is all ownership needs (no training burns the CPU).
    trainer = await build_trainer(
        TrainerSettings(
            port=0,
            data_dir=tmp_path / "trainer",
            log_json=False,
            grace_seconds=0.1,
            registry_address=stack.registry.address,
            key_ring_file=stack.key_ring_file,
            python="/bin/false",
            max_attempts=1,
            poll_interval_seconds=0.05,
        )
    )
    await trainer.start()
    stack.others.append(trainer)
    gateway = await stack.start_gateway(trainer_address=trainer.address)
    world = World(
        acme=_tenant(stack, gateway, "acme", TENANT_SCOPES),
        globex=_tenant(stack, gateway, "globex", TENANT_SCOPES),
        admin=_tenant(stack, gateway, "ops", ("admin",)),
    )
    await _own_everything(world.acme)
    await _own_everything(world.globex)
    return world


async def _not_found(call) -> str:
    with pytest.raises(aio.AioRpcError) as info:
        await call
    assert info.value.code() == NOT_FOUND, info.value.details()
    return info.value.details() or ""


@pytest.mark.parametrize("direction", ["acme->globex", "globex->acme"])
async def test_a_tenant_cannot_see_or_touch_the_others_registry_objects(world, direction):
    me, other = (
        (world.acme, world.globex) if direction == "acme->globex" else (world.globex, world.acme)
    )
    theirs = other.model
    R = registry_pb2
    for method, request in [
        ("GetModel", R.GetModelRequest(name=theirs)),
        ("DeleteModel", R.DeleteModelRequest(name=theirs)),
        ("GetVersion", R.GetVersionRequest(model_name=theirs, version=1)),
        ("ListVersions", R.ListVersionsRequest(model_name=theirs)),
        (
            "UpdateVersionStatus",
            R.UpdateVersionStatusRequest(
                model_name=theirs, version=1, status=R.VERSION_STATUS_ARCHIVED
            ),
        ),
        (
            "CreateVersion",
            R.CreateVersionRequest(
                model_name=theirs,
                artifact_uri=f"lattice-artifact://sha256/{me.digest}",
                artifact_digest=me.digest,
                format=TRANSFORMERS,
            ),
        ),
        ("SetAlias", R.SetAliasRequest(model_name=theirs, alias="mine", version=1)),
        ("DeleteAlias", R.DeleteAliasRequest(model_name=theirs, alias="prod")),
        ("ListAliases", R.ListAliasesRequest(model_name=theirs)),
        ("ResolveModel", R.ResolveModelRequest(model=f"{theirs}@prod")),
        ("GetDeployment", R.GetDeploymentRequest(model_name=theirs)),
        ("UpdateDeployment", R.UpdateDeploymentRequest(model_name=theirs)),
        ("GetPolicy", R.GetPolicyRequest(model_name=theirs)),
    ]:
        details = await _not_found(me.reg(method, request))
        assert other.name not in details, (method, details)

    # Their bytes: no download, and no version of mine may point at them.
    downloads = me.registry.DownloadArtifact(
        R.DownloadArtifactRequest(digest=other.digest), metadata=me.metadata
    )
    await _not_found(anext(aiter(downloads)))
    await _not_found(
        me.reg(
            "CreateVersion",
            R.CreateVersionRequest(
                model_name=me.model,
                artifact_uri=f"lattice-artifact://sha256/{other.digest}",
                artifact_digest=other.digest,
                format=TRANSFORMERS,
            ),
        )
    )
    # Nothing changed for the owner.
    got = await other.reg("GetDeployment", R.GetDeploymentRequest(model_name=theirs))
    assert [r.version for r in got.deployment.routes] == [1]
    assert got.deployment.tenant == other.name
    aliases = await other.reg("ListAliases", R.ListAliasesRequest(model_name=theirs))
    assert [a.alias for a in aliases.aliases] == ["prod"]
    assert (await other.reg("GetModel", R.GetModelRequest(name=theirs))).model.latest_version == 1

    # Listings hold only my own.
    models = await me.reg("ListModels", R.ListModelsRequest())
    assert [m.name for m in models.models] == [me.model]
    assert {m.tenant for m in models.models} == {me.name}
    deployments = await me.reg("ListDeployments", R.ListDeploymentsRequest())
    assert [d.model_name for d in deployments.deployments] == [me.model]
    history = await me.reg("ListDeploymentHistory", R.ListDeploymentHistoryRequest())
    assert {e.model_name for e in history.entries} == {me.model}
    by_name = await me.reg(
        "ListDeploymentHistory", R.ListDeploymentHistoryRequest(model_name=theirs)
    )
    assert not by_name.entries

    # Watch (snapshot) carries only my objects.
    seen = []
    async for event in me.registry.Watch(R.WatchRequest(), metadata=me.metadata):
        if event.type == R.WATCH_EVENT_TYPE_SYNCED:
            break
        kind = event.WhichOneof("object")
        if kind:
            seen.append(getattr(event, kind))
    assert seen and {obj.tenant for obj in seen} == {me.name}

    # A taken name: the same answer as for one's own, naming no owner.
    with pytest.raises(aio.AioRpcError) as mine:
        await me.reg("CreateModel", R.CreateModelRequest(model=R.Model(name=me.model, task=TEXT)))
    with pytest.raises(aio.AioRpcError) as taken:
        await me.reg("CreateModel", R.CreateModelRequest(model=R.Model(name=theirs, task=TEXT)))
    assert taken.value.code() == mine.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert other.name not in (taken.value.details() or "")


@pytest.mark.parametrize("direction", ["acme->globex", "globex->acme"])
async def test_a_tenant_cannot_see_or_touch_the_others_datasets_and_jobs(world, direction):
    me, other = (
        (world.acme, world.globex) if direction == "acme->globex" else (world.globex, world.acme)
    )
    T = trainer_pb2
    await _not_found(me.train("GetDataset", T.GetDatasetRequest(dataset_id=other.dataset_id)))
    await _not_found(me.train("GetJob", T.GetJobRequest(job_id=other.job_id)))
    await _not_found(me.train("CancelJob", T.CancelJobRequest(job_id=other.job_id)))
    watch = me.trainer.WatchJob(T.WatchJobRequest(job_id=other.job_id), metadata=me.metadata)
    await _not_found(anext(aiter(watch)))

    # Training on their dataset answers exactly as training on one that does not exist.
    with pytest.raises(aio.AioRpcError) as theirs:
        await me.train("SubmitJob", T.SubmitJobRequest(spec=_job_spec(other.dataset_id)))
    with pytest.raises(aio.AioRpcError) as missing:
        await me.train("SubmitJob", T.SubmitJobRequest(spec=_job_spec("docs-000000000000")))
    assert theirs.value.code() == missing.value.code()
    assert (theirs.value.details() or "").replace(other.dataset_id, "X") == (
        missing.value.details() or ""
    ).replace("docs-000000000000", "X")

    # Same data, same name, same idempotency key: still two tenants' separate things.
    assert me.dataset_id != other.dataset_id
    again = await me.train(
        "SubmitJob", T.SubmitJobRequest(spec=_job_spec(me.dataset_id), request_id="nightly")
    )
    assert again.job.id == me.job_id and again.job.tenant == me.name

    datasets = await me.train("ListDatasets", T.ListDatasetsRequest())
    assert [d.id for d in datasets.datasets] == [me.dataset_id]
    assert datasets.datasets[0].tenant == me.name
    jobs = await me.train("ListJobs", T.ListJobsRequest())
    assert [j.id for j in jobs.jobs] == [me.job_id]
    mine = await me.train("GetJob", T.GetJobRequest(job_id=me.job_id))
    assert mine.job.tenant == me.name


async def test_the_admin_sees_and_manages_every_tenant(world):
    admin, R, T = world.admin, registry_pb2, trainer_pb2
    models = await admin.reg("ListModels", R.ListModelsRequest())
    assert {(m.name, m.tenant) for m in models.models} == {
        (world.acme.model, "acme"),
        (world.globex.model, "globex"),
    }
    history = await admin.reg("ListDeploymentHistory", R.ListDeploymentHistoryRequest())
    assert {e.tenant for e in history.entries} == {"acme", "globex"}
    datasets = await admin.train("ListDatasets", T.ListDatasetsRequest())
    assert {d.tenant for d in datasets.datasets} == {"acme", "globex"}
    jobs = await admin.train("ListJobs", T.ListJobsRequest())
    assert {j.tenant for j in jobs.jobs} == {"acme", "globex"}

    # Policy decides who may invoke a model; only an admin sets it, on anyone's model.
    with pytest.raises(aio.AioRpcError) as denied:
        await world.acme.reg(
            "SetPolicy", R.SetPolicyRequest(policy=R.ModelPolicy(model_name=world.acme.model))
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    policy = await admin.reg(
        "SetPolicy",
        R.SetPolicyRequest(
            policy=R.ModelPolicy(model_name=world.acme.model, allowed_tenants=["acme", "globex"])
        ),
    )
    assert policy.policy.tenant == "acme"
    # ...which lets globex invoke it, not manage it.
    await _not_found(world.globex.reg("GetPolicy", R.GetPolicyRequest(model_name=world.acme.model)))

    job = await admin.train("GetJob", T.GetJobRequest(job_id=world.globex.job_id))
    assert job.job.tenant == "globex"
    await admin.train("CancelJob", T.CancelJobRequest(job_id=world.globex.job_id))
    offline = await admin.reg(
        "UpdateDeployment", R.UpdateDeploymentRequest(model_name=world.globex.model)
    )
    assert offline.deployment.tenant == "globex" and offline.deployment.updated_by == "ops-user"
    await admin.reg("DeleteModel", R.DeleteModelRequest(name=world.globex.model))
    await _not_found(world.globex.reg("GetModel", R.GetModelRequest(name=world.globex.model)))
