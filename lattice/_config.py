"""Where and how a client connects: target, token, TLS, deadlines, retries.

Arguments win over `LATTICE_*` environment variables, which win over the
defaults. Nothing is read at import time: `ClientConfig.resolve` reads the
environment when a client is built.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from lattice.tokens import DEV_CA_FILE

DEFAULT_TARGET = "127.0.0.1:50051"

#: Default deadline in seconds per kind of call; None = no deadline (watches).
DEFAULT_TIMEOUTS: dict[str, float | None] = {
    "unary": 30.0,  # registry and trainer reads and writes
    "generate": 120.0,  # Generate, Embed: a model has to run
    "stream": 300.0,  # GenerateStream: the whole stream
    "transfer": 600.0,  # artifact upload/download
    "prepare": 600.0,  # PrepareDataset: cleaning and tokenizer training
    "watch": None,  # Watch, WatchJob: live until the caller stops
}

#: Calls that change nothing, so gRPC may retry them on UNAVAILABLE. Generate,
#: GenerateStream and Embed change no state either (the cache is transparent).
IDEMPOTENT_METHODS: dict[str, tuple[str, ...]] = {
    "lattice.v1.InferenceService": ("Generate", "GenerateStream", "Embed", "ListLoadedModels"),
    "lattice.v1.ModelRegistryService": (
        "GetModel",
        "ListModels",
        "GetVersion",
        "ListVersions",
        "DownloadArtifact",
        "ListAliases",
        "ResolveModel",
        "GetDeployment",
        "ListDeployments",
        "ListDeploymentHistory",
        "GetPolicy",
        "Watch",
    ),
    "lattice.v1.TrainerService": (
        "GetDataset",
        "ListDatasets",
        "GetJob",
        "ListJobs",
        "WatchJob",
    ),
}

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def service_config(max_attempts: int = 4) -> str:
    """gRPC service config: retry UNAVAILABLE with backoff, for idempotent calls only."""
    names = [
        {"service": service, "method": method}
        for service, methods in IDEMPOTENT_METHODS.items()
        for method in methods
    ]
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": names,
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def _read(value: str | bytes | os.PathLike[str] | None) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        return value
    text = os.fspath(value)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    return Path(text).expanduser().read_bytes()


def _dev_ca(env: Mapping[str, str]) -> bytes | None:
    """The CA of a local `lattice up --tls` (in LATTICE_DATA_DIR, else ./.lattice), if any."""
    path = Path(env.get("LATTICE_DATA_DIR") or ".lattice") / DEV_CA_FILE
    return path.read_bytes() if path.is_file() else None


def _env_bool(raw: str | None) -> bool | None:
    if raw is None or raw.strip() == "":
        return None
    return raw.strip().lower() in ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """Resolved connection settings for one client."""

    target: str = DEFAULT_TARGET
    token: str | None = None
    tls: bool = False
    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    #: Overrides the name checked against the server certificate (tests, IPs).
    server_name: str | None = None
    timeouts: Mapping[str, float | None] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_TIMEOUTS)
    )
    retries: int = 4
    #: Extra metadata sent with every call (e.g. a W3C `traceparent`).
    extra_metadata: tuple[tuple[str, str], ...] = ()

    @classmethod
    def resolve(
        cls,
        target: str | None = None,
        token: str | None = None,
        *,
        tls: bool | None = None,
        root_certificates: str | bytes | os.PathLike[str] | None = None,
        private_key: str | bytes | os.PathLike[str] | None = None,
        certificate_chain: str | bytes | os.PathLike[str] | None = None,
        server_name: str | None = None,
        timeout: float | None = None,
        retries: int = 4,
        metadata: Sequence[tuple[str, str]] = (),
        env: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        """Arguments, then LATTICE_* variables, then defaults."""
        env = os.environ if env is None else env
        root = _read(root_certificates if root_certificates else env.get("LATTICE_TLS_ROOT_CERT"))
        key = _read(private_key if private_key else env.get("LATTICE_TLS_CLIENT_KEY"))
        chain = _read(
            certificate_chain if certificate_chain else env.get("LATTICE_TLS_CLIENT_CERT")
        )
        if (key is None) != (chain is None):
            raise ValueError("a client certificate needs both the certificate and its key")
        use_tls = tls if tls is not None else _env_bool(env.get("LATTICE_TLS"))
        if use_tls is None:
            use_tls = bool(root or chain)
        if use_tls and root is None:
            root = _dev_ca(env)
        timeouts = dict(DEFAULT_TIMEOUTS)
        if timeout is not None:
            timeouts = {
                kind: (timeout if value is not None else None) for kind, value in timeouts.items()
            }
        return cls(
            target=target or env.get("LATTICE_TARGET") or DEFAULT_TARGET,
            token=token or env.get("LATTICE_TOKEN") or None,
            tls=use_tls,
            root_certificates=root,
            private_key=key,
            certificate_chain=chain,
            server_name=server_name or env.get("LATTICE_TLS_SERVER_NAME") or None,
            timeouts=timeouts,
            retries=retries,
            extra_metadata=tuple((str(k).lower(), str(v)) for k, v in metadata),
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """Channel credentials for TLS (and mTLS), or None for plaintext."""
        if not self.tls:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def open_channel(self, api: Any) -> Any:
        """A channel to the target from `api` (`grpc` or `grpc.aio`: same function names)."""
        credentials = self.credentials()
        if credentials is None:
            return api.insecure_channel(self.target, options=self.channel_options())
        return api.secure_channel(self.target, credentials, options=self.channel_options())

    def channel_options(self) -> list[tuple[str, Any]]:
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.primary_user_agent", "lattice-python"),
            ("grpc.enable_retries", 1 if self.retries > 1 else 0),
            ("grpc.service_config", service_config(max(self.retries, 2))),
        ]
        if self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata: the bearer token, when there is one, and any extra pairs."""
        if not self.token:
            return self.extra_metadata
        return (("authorization", f"Bearer {self.token}"), *self.extra_metadata)

    def timeout(self, kind: str, override: float | None = None) -> float | None:
        return override if override is not None else self.timeouts[kind]
