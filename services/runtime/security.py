"""What a service needs to talk to the rest of the suite securely, from its settings.

One `ServiceSecurity` per process: the key ring, the server's TLS
credentials, the verifier its server installs (every call must carry an
internal token addressed to this service), and channels to other services
that present this service's certificate and sign each call's caller.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from services.runtime.channels import create_channel
from services.runtime.identity import service_caller
from services.runtime.internal_tokens import CallerVerifier, TokenMinter
from services.runtime.keys import DEFAULT_KEY_RING_PATH, KeyManager, LocalKeyRing
from services.runtime.settings import ServerSettings
from services.runtime.tls import channel_credentials, server_credentials


def key_ring_path(settings: ServerSettings) -> Path:
    """The key ring file a service uses: the setting, else the data directory's."""
    return (
        Path(settings.key_ring_file)
        if settings.key_ring_file
        else (settings.data_dir / DEFAULT_KEY_RING_PATH)
    )


@dataclasses.dataclass(frozen=True)
class ServiceSecurity:
    """Keys, TLS and token signing for one service (`service` is its name)."""

    service: str
    keys: KeyManager
    token_seconds: float = 300.0
    server_credentials: grpc.ServerCredentials | None = None
    client_credentials: grpc.ChannelCredentials | None = None

    def verifier(self) -> CallerVerifier:
        """Accepts internal tokens addressed to this service."""
        return CallerVerifier(self.keys, audience=self.service)

    def minter(self, audience: str) -> TokenMinter:
        """Signs callers for calls to the `audience` service."""
        return TokenMinter(
            self.keys,
            audience=audience,
            service=service_caller(self.service),
            lifetime=self.token_seconds,
        )

    def channel(self, target: str, audience: str, **kwargs: Any) -> aio.Channel:
        """A channel to the `audience` service at `target`: TLS if configured, tokens always."""
        return create_channel(
            target,
            credentials=kwargs.pop("credentials", self.client_credentials),
            minter=self.minter(audience),
            **kwargs,
        )


def service_security(settings: ServerSettings, service: str) -> ServiceSecurity:
    """Build `service`'s security from its settings (creating the key ring on first use)."""
    client = None
    if settings.tls_ca_file:
        client = channel_credentials(
            settings.tls_ca_file, settings.tls_cert_file, settings.tls_key_file
        )
    return ServiceSecurity(
        service=service,
        keys=LocalKeyRing.open_or_create(key_ring_path(settings)),
        token_seconds=settings.internal_token_seconds,
        server_credentials=server_credentials(
            settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
        ),
        client_credentials=client,
    )
