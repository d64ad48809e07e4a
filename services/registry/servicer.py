"""The gRPC face of the registry: convert the request, call `Registry`, convert back.

No business logic and no try/except here; domain errors raised by the
`Registry` become status codes in the shared runtime's RPC wrapper.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from lattice.errors import InvalidArgument
from lattice.v1 import registry_pb2 as pb
from lattice.v1 import registry_pb2_grpc
from services.registry.registry import Registry
from services.registry.uploads import Artifacts
from services.runtime.identity import caller_of


class RegistryServicer(registry_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, registry: Registry, artifacts: Artifacts) -> None:
        self._registry = registry
        self._artifacts = artifacts

    async def CreateModel(self, request, context):
        return pb.CreateModelResponse(
            model=await self._registry.create_model(caller_of(context), request.model)
        )

    async def GetModel(self, request, context):
        return pb.GetModelResponse(model=self._registry.get_model(caller_of(context), request.name))

    async def ListModels(self, request, context):
        models, token = self._registry.list_models(
            caller_of(context), request.page_size, request.page_token
        )
        return pb.ListModelsResponse(models=models, next_page_token=token)

    async def DeleteModel(self, request, context):
        await self._registry.delete_model(caller_of(context), request.name)
        return pb.DeleteModelResponse()

    async def CreateVersion(self, request, context):
        return pb.CreateVersionResponse(
            version=await self._registry.create_version(caller_of(context), request)
        )

    async def GetVersion(self, request, context):
        version = self._registry.get_version(
            caller_of(context), request.model_name, request.version
        )
        return pb.GetVersionResponse(version=version)

    async def ListVersions(self, request, context):
        versions, token = self._registry.list_versions(
            caller_of(context), request.model_name, request.page_size, request.page_token
        )
        return pb.ListVersionsResponse(versions=versions, next_page_token=token)

    async def UpdateVersionStatus(self, request, context):
        version = await self._registry.update_version_status(
            caller_of(context), request.model_name, request.version, request.status
        )
        return pb.UpdateVersionStatusResponse(version=version)

    async def UploadArtifact(self, request_iterator, context):
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidArgument("header", "the first message must carry the header")
        response = await self._artifacts.upload(
            caller_of(context), first.header, _chunks(request_iterator)
        )
        return response

    async def DownloadArtifact(self, request, context):
        download = await self._artifacts.download(caller_of(context), request.digest)
        yield pb.DownloadArtifactResponse(info=download.info)
        async for chunk in download.chunks:
            yield pb.DownloadArtifactResponse(chunk=chunk)

    async def SetAlias(self, request, context):
        alias = await self._registry.set_alias(
            caller_of(context),
            request.model_name,
            request.alias,
            request.version,
            request.expected_revision,
        )
        return pb.SetAliasResponse(alias=alias)

    async def DeleteAlias(self, request, context):
        await self._registry.delete_alias(
            caller_of(context), request.model_name, request.alias, request.expected_revision
        )
        return pb.DeleteAliasResponse()

    async def ListAliases(self, request, context):
        return pb.ListAliasesResponse(
            aliases=self._registry.list_aliases(caller_of(context), request.model_name)
        )

    async def ResolveModel(self, request, context):
        resolved = self._registry.resolve(caller_of(context), request.model)
        return pb.ResolveModelResponse(
            model_name=resolved.model_name,
            version=resolved.version,
            deployment=resolved.deployment,
            policy=resolved.policy,
        )

    async def GetDeployment(self, request, context):
        deployment = self._registry.get_deployment(caller_of(context), request.model_name)
        return pb.GetDeploymentResponse(deployment=deployment)

    async def ListDeployments(self, request, context):
        deployments, token = self._registry.list_deployments(
            caller_of(context), request.page_size, request.page_token
        )
        return pb.ListDeploymentsResponse(deployments=deployments, next_page_token=token)

    async def UpdateDeployment(self, request, context):
        deployment = await self._registry.update_deployment(caller_of(context), request)
        return pb.UpdateDeploymentResponse(deployment=deployment)

    async def ListDeploymentHistory(self, request, context):
        entries, token = await self._registry.list_history(
            caller_of(context), request.model_name, request.page_size, request.page_token
        )
        return pb.ListDeploymentHistoryResponse(entries=entries, next_page_token=token)

    async def ReportVersionLoad(self, request, context):
        entry = await self._registry.report_version_load(caller_of(context), request)
        return pb.ReportVersionLoadResponse(entry=entry)

    async def GetPolicy(self, request, context):
        return pb.GetPolicyResponse(
            policy=self._registry.get_policy(caller_of(context), request.model_name)
        )

    async def SetPolicy(self, request, context):
        policy = await self._registry.set_policy(
            caller_of(context), request.policy, request.expected_revision
        )
        return pb.SetPolicyResponse(policy=policy)

    async def CreateTenant(self, request, context):
        tenant = await self._registry.create_tenant(caller_of(context), request.tenant)
        return pb.CreateTenantResponse(tenant=tenant)

    async def GetTenant(self, request, context):
        return pb.GetTenantResponse(
            tenant=self._registry.get_tenant(caller_of(context), request.name)
        )

    async def ListTenants(self, request, context):
        tenants, token = self._registry.list_tenants(
            caller_of(context), request.page_size, request.page_token
        )
        return pb.ListTenantsResponse(tenants=tenants, next_page_token=token)

    async def UpdateTenant(self, request, context):
        tenant = await self._registry.update_tenant(
            caller_of(context), request.tenant, request.expected_revision
        )
        return pb.UpdateTenantResponse(tenant=tenant)

    async def Watch(self, request, context):
        events = self._registry.watch(
            caller_of(context), request.from_revision, list(request.model_names)
        )
        async for event in events:
            yield event


async def _chunks(request_iterator: AsyncIterator[pb.UploadArtifactRequest]):
    """The bytes of every message after the header."""
    async for message in request_iterator:
        if message.WhichOneof("payload") != "chunk":
            raise InvalidArgument("header", "only the first message may carry the header")
        yield message.chunk
