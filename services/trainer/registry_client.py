"""The trainer's calls to the registry: fetch a registered model, upload an
artifact, create a version (found again by its job tag), alias and canary.

Every call acts for a tenant: `as_caller` binds the caller whose identity the
registry sees, so a job registers into (and fine-tunes from) its own
tenant's models only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from grpc import aio

from lattice.artifacts import CONTENT_TYPE, iter_chunks, unpack_to
from lattice.errors import AlreadyExists, InvalidArgument, NotFound, from_rpc_error
from lattice.refs import parse_model_ref
from lattice.v1 import common_pb2, registry_pb2, registry_pb2_grpc
from services.runtime.identity import Caller

JOB_TAG = "lattice.job_id"


def job_caller(job_tenant: str, job_id: str) -> Caller:
    """Who a job acts as in the registry: its tenant, with no admin rights."""
    return Caller(tenant=job_tenant, subject=f"trainer-job:{job_id}")


class RegistryClient:
    def __init__(
        self, channel: aio.Channel, timeout: float = 60.0, *, caller: Caller | None = None
    ) -> None:
        self.channel = channel
        self.stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        self.timeout = timeout
        self.metadata = caller.metadata() if caller is not None else None

    def as_caller(self, caller: Caller) -> RegistryClient:
        """The same connection, calling as `caller`."""
        return RegistryClient(self.channel, self.timeout, caller=caller)

    async def _call(self, method, request):
        try:
            return await method(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def resolve_version(self, ref: str) -> registry_pb2.ModelVersion:
        """'name:version', 'name@alias', or 'name' (its newest version)."""
        parsed = parse_model_ref(ref)
        response = await self._call(
            self.stub.ResolveModel, registry_pb2.ResolveModelRequest(model=ref)
        )
        if response.HasField("version") and response.version.version:
            return response.version
        model = await self._call(self.stub.GetModel, registry_pb2.GetModelRequest(name=parsed.name))
        if not model.model.latest_version:
            raise NotFound(f"model {parsed.name!r} has no versions")
        got = await self._call(
            self.stub.GetVersion,
            registry_pb2.GetVersionRequest(
                model_name=parsed.name, version=model.model.latest_version
            ),
        )
        return got.version

    async def download(self, version: registry_pb2.ModelVersion, directory: Path) -> Path:
        """Download and unpack a version's artifact into `directory`."""
        if not version.artifact_digest:
            raise InvalidArgument("base_model", "the version has no stored artifact")
        chunks: list[bytes] = []
        try:
            stream = self.stub.DownloadArtifact(
                registry_pb2.DownloadArtifactRequest(digest=version.artifact_digest),
                timeout=self.timeout * 10,
                metadata=self.metadata,
            )
            async for message in stream:
                if message.WhichOneof("payload") == "chunk":
                    chunks.append(message.chunk)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        data = b"".join(chunks)
        return await asyncio.to_thread(unpack_to, data, directory)

    async def ensure_model(self, name: str, task: common_pb2.ModelTask, description: str) -> None:
        model = registry_pb2.Model(name=name, task=task, description=description)
        with contextlib.suppress(AlreadyExists):
            await self._call(self.stub.CreateModel, registry_pb2.CreateModelRequest(model=model))

    async def find_by_tag(self, model_name: str, key: str, value: str):
        """The version of `model_name` tagged key=value, or None."""
        token = ""
        while True:
            try:
                page = await self._call(
                    self.stub.ListVersions,
                    registry_pb2.ListVersionsRequest(
                        model_name=model_name, page_size=200, page_token=token
                    ),
                )
            except NotFound:
                return None
            for version in page.versions:
                if version.tags.get(key) == value:
                    return version
            token = page.next_page_token
            if not token:
                return None

    async def upload(self, data: bytes, digest: str) -> str:
        async def requests() -> AsyncIterator[registry_pb2.UploadArtifactRequest]:
            header = registry_pb2.ArtifactHeader(
                digest=digest, size_bytes=len(data), content_type=CONTENT_TYPE
            )
            yield registry_pb2.UploadArtifactRequest(header=header)
            for chunk in iter_chunks(data):
                yield registry_pb2.UploadArtifactRequest(chunk=chunk)

        try:
            response = await self.stub.UploadArtifact(
                requests(), timeout=self.timeout * 10, metadata=self.metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response.artifact_uri

    async def create_version(
        self, request: registry_pb2.CreateVersionRequest
    ) -> registry_pb2.ModelVersion:
        return (await self._call(self.stub.CreateVersion, request)).version

    async def set_alias(self, model_name: str, alias: str, version: int) -> None:
        await self._call(
            self.stub.SetAlias,
            registry_pb2.SetAliasRequest(model_name=model_name, alias=alias, version=version),
        )

    async def canary(self, model_name: str, version: int, weight: int, reason: str) -> None:
        """Give `version` `weight`% of traffic; the other routes share the rest in proportion.
        With no other routes the version takes all traffic. No-op if already routed."""
        current = (
            await self._call(
                self.stub.GetDeployment, registry_pb2.GetDeploymentRequest(model_name=model_name)
            )
        ).deployment
        if any(route.version == version for route in current.routes):
            return
        others = [r for r in current.routes if r.weight > 0]
        if not others:
            routes = [registry_pb2.Route(version=version, weight=100)]
        else:
            remaining = 100 - weight
            total = sum(r.weight for r in others)
            routes = [
                registry_pb2.Route(version=r.version, weight=remaining * r.weight // total)
                for r in others
            ]
            routes[0].weight += remaining - sum(r.weight for r in routes)
            routes.append(registry_pb2.Route(version=version, weight=weight))
        await self._call(
            self.stub.UpdateDeployment,
            registry_pb2.UpdateDeploymentRequest(
                model_name=model_name,
                routes=routes,
                shadow_version=current.shadow_version,
                expected_revision=current.revision,
                reason=reason,
            ),
        )
