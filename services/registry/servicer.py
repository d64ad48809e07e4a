"""The gRPC face of the registry: convert the request, call `Registry`, convert back.

No business logic and no try/except here; domain errors raised by the
`Registry` become status codes in the shared runtime's RPC wrapper.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from lattice.errors import InvalidArgument
from lattice.v1 import registry_pb2 as pb
from lattice.v1 import registry_pb2_grpc
from services.registry.registry import Registry
from services.registry.uploads import Artifacts
from services.runtime.identity import caller_var

ANONYMOUS = "anonymous"


def actor_of(context: aio.ServicerContext) -> str:
    """Who is calling: the verified caller's subject, else anonymous."""
    caller = caller_var.get()
    return caller.subject if caller is not None else ANONYMOUS


class RegistryServicer(registry_pb2_grpc.ModelRegistryServiceServicer):
    def __init__(self, registry: Registry, artifacts: Artifacts) -> None:
        self._registry = registry
        self._artifacts = artifacts

    async def CreateModel(self, request, context):
        return pb.CreateModelResponse(model=await self._registry.create_model(request.model))

    async def GetModel(self, request, context):
        return pb.GetModelResponse(model=self._registry.get_model(request.name))

    async def ListModels(self, request, context):
        models, token = self._registry.list_models(request.page_size, request.page_token)
        return pb.ListModelsResponse(models=models, next_page_token=token)

    async def DeleteModel(self, request, context):
        await self._registry.delete_model(request.name)
        return pb.DeleteModelResponse()

    async def CreateVersion(self, request, context):
        return pb.CreateVersionResponse(version=await self._registry.create_version(request))

    async def GetVersion(self, request, context):
        version = self._registry.get_version(request.model_name, request.version)
        return pb.GetVersionResponse(version=version)

    async def ListVersions(self, request, context):
        versions, token = self._registry.list_versions(
            request.model_name, request.page_size, request.page_token
        )
        return pb.ListVersionsResponse(versions=versions, next_page_token=token)

    async def UpdateVersionStatus(self, request, context):
        version = await self._registry.update_version_status(
            request.model_name, request.version, request.status
        )
        return pb.UpdateVersionStatusResponse(version=version)

    async def UploadArtifact(self, request_iterator, context):
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("payload") != "header":
            raise InvalidArgument("header", "the first message must carry the header")
        response = await self._artifacts.upload(first.header, _chunks(request_iterator))
        return response

    async def DownloadArtifact(self, request, context):
        download = await self._artifacts.download(request.digest)
        yield pb.DownloadArtifactResponse(info=download.info)
        async for chunk in download.chunks:
            yield pb.DownloadArtifactResponse(chunk=chunk)

    async def SetAlias(self, request, context):
        alias = await self._registry.set_alias(
            request.model_name, request.alias, request.version, request.expected_revision
        )
        return pb.SetAliasResponse(alias=alias)

    async def DeleteAlias(self, request, context):
        await self._registry.delete_alias(
            request.model_name, request.alias, request.expected_revision
        )
        return pb.DeleteAliasResponse()

    async def ListAliases(self, request, context):
        return pb.ListAliasesResponse(aliases=self._registry.list_aliases(request.model_name))

    async def ResolveModel(self, request, context):
        resolved = self._registry.resolve(request.model)
        return pb.ResolveModelResponse(
            model_name=resolved.model_name,
            version=resolved.version,
            deployment=resolved.deployment,
            policy=resolved.policy,
        )

    async def GetDeployment(self, request, context):
        deployment = self._registry.get_deployment(request.model_name)
        return pb.GetDeploymentResponse(deployment=deployment)

    async def ListDeployments(self, request, context):
        deployments, token = self._registry.list_deployments(request.page_size, request.page_token)
        return pb.ListDeploymentsResponse(deployments=deployments, next_page_token=token)

    async def UpdateDeployment(self, request, context):
        deployment = await self._registry.update_deployment(request, actor_of(context))
        return pb.UpdateDeploymentResponse(deployment=deployment)

    async def ListDeploymentHistory(self, request, context):
        entries, token = await self._registry.list_history(
            request.model_name, request.page_size, request.page_token
        )
        return pb.ListDeploymentHistoryResponse(entries=entries, next_page_token=token)

    async def GetPolicy(self, request, context):
        return pb.GetPolicyResponse(policy=self._registry.get_policy(request.model_name))

    async def SetPolicy(self, request, context):
        policy = await self._registry.set_policy(request.policy, request.expected_revision)
        return pb.SetPolicyResponse(policy=policy)

    async def Watch(self, request, context):
        events = self._registry.watch(request.from_revision, list(request.model_names))
        async for event in events:
            yield event


async def _chunks(request_iterator: AsyncIterator[pb.UploadArtifactRequest]):
    """The bytes of every message after the header."""
    async for message in request_iterator:
        if message.WhichOneof("payload") != "chunk":
            raise InvalidArgument("header", "only the first message may carry the header")
        yield message.chunk
