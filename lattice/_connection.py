"""What `Client` and `AsyncClient` share: resolved settings, one channel, the stubs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, ClassVar

from lattice._config import ClientConfig
from lattice.v1 import inference_pb2_grpc, registry_pb2_grpc, trainer_pb2_grpc

PathOrBytes = str | os.PathLike[str] | bytes


class Connection:
    """Resolves the settings once and opens one channel for the three services.

    A subclass names its gRPC flavour in `channel_api` (`grpc` or `grpc.aio`,
    which have the same channel functions); everything else it adds is calls.
    """

    channel_api: ClassVar[Any]

    def __init__(
        self,
        target: str | None = None,
        token: str | None = None,
        *,
        tls: bool | None = None,
        root_certificates: PathOrBytes | None = None,
        private_key: PathOrBytes | None = None,
        certificate_chain: PathOrBytes | None = None,
        server_name: str | None = None,
        timeout: float | None = None,
        retries: int = 4,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._config = ClientConfig.resolve(
            target,
            token,
            tls=tls,
            root_certificates=root_certificates,
            private_key=private_key,
            certificate_chain=certificate_chain,
            server_name=server_name,
            timeout=timeout,
            retries=retries,
            metadata=metadata,
        )
        self._channel = self._config.open_channel(self.channel_api)
        self._inference = inference_pb2_grpc.InferenceServiceStub(self._channel)
        self._registry = registry_pb2_grpc.ModelRegistryServiceStub(self._channel)
        self._trainer = trainer_pb2_grpc.TrainerServiceStub(self._channel)

    @property
    def target(self) -> str:
        return self._config.target
