"""TLS material from files: server credentials, and mTLS credentials for upstreams.

Plaintext is used only when no certificate is configured (the default for
`lattice up`, which binds everything to loopback).
"""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str = ""
) -> grpc.ServerCredentials | None:
    """Server TLS from PEM files; with `client_ca_file`, callers must present a client cert."""
    if not cert_file and not key_file:
        return None
    if not (cert_file and key_file):
        raise ValueError("server TLS needs both tls_cert_file and tls_key_file")
    return grpc.ssl_server_credentials(
        [(_read(key_file), _read(cert_file))],
        root_certificates=_read(client_ca_file),
        require_client_auth=bool(client_ca_file),
    )


def channel_credentials(
    ca_file: str, cert_file: str = "", key_file: str = ""
) -> grpc.ChannelCredentials | None:
    """Client TLS to upstreams; with a cert and key it is mutual TLS."""
    if not (ca_file or cert_file or key_file):
        return None
    if bool(cert_file) != bool(key_file):
        raise ValueError("upstream mTLS needs both upstream_cert_file and upstream_key_file")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file),
        private_key=_read(key_file),
        certificate_chain=_read(cert_file),
    )
