"""Small helpers that make registry tests read like the workflow they check."""

from __future__ import annotations

import os

from lattice.artifacts import iter_chunks, sha256_hex
from lattice.v1 import common_pb2, registry_pb2, registry_pb2_grpc

TEXT = common_pb2.MODEL_TASK_TEXT_GENERATION
TRANSFORMERS = common_pb2.ARTIFACT_FORMAT_TRANSFORMERS


def upload_messages(data: bytes, digest: str | None = None, chunk: int = 64 * 1024):
    header = registry_pb2.ArtifactHeader(
        digest=digest or sha256_hex(data), size_bytes=len(data), content_type="application/x-tar"
    )
    yield registry_pb2.UploadArtifactRequest(header=header)
    for part in iter_chunks(data, chunk):
        yield registry_pb2.UploadArtifactRequest(chunk=part)


class RegistryClient:
    """Workflow shortcuts over the generated stub."""

    def __init__(self, stub: registry_pb2_grpc.ModelRegistryServiceStub) -> None:
        self.stub = stub

    async def model(self, name: str = "gpt-tiny") -> registry_pb2.Model:
        response = await self.stub.CreateModel(
            registry_pb2.CreateModelRequest(model=registry_pb2.Model(name=name, task=TEXT))
        )
        return response.model

    async def upload(self, data: bytes | None = None) -> registry_pb2.UploadArtifactResponse:
        data = os.urandom(4096) if data is None else data
        return await self.stub.UploadArtifact(upload_messages(data))

    async def version(self, name: str = "gpt-tiny", data: bytes | None = None):
        uploaded = await self.upload(data)
        response = await self.stub.CreateVersion(
            registry_pb2.CreateVersionRequest(
                model_name=name,
                artifact_uri=uploaded.artifact_uri,
                artifact_digest=uploaded.digest,
                format=TRANSFORMERS,
            )
        )
        return response.version

    async def deploy(
        self,
        name: str,
        *routes: tuple[int, int],
        shadow: int = 0,
        expected: int = 0,
        reason: str = "",
    ):
        response = await self.stub.UpdateDeployment(
            registry_pb2.UpdateDeploymentRequest(
                model_name=name,
                routes=[registry_pb2.Route(version=v, weight=w) for v, w in routes],
                shadow_version=shadow,
                expected_revision=expected,
                reason=reason,
            )
        )
        return response.deployment
