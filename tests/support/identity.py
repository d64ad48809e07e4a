"""Calling an internal service directly in a test, as a suite service would.

Internal services refuse calls without an internal token. A test that drives
one directly signs its calls with the key ring in the server's data
directory, exactly as the gateway does: through a channel with a
`TokenMinter`, or with a minted token handed to the SDK as its bearer token.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc import aio

from services.runtime import LatticeServer
from services.runtime.channels import create_channel
from services.runtime.identity import Caller
from services.runtime.internal_tokens import TokenMinter
from services.runtime.keys import DEFAULT_KEY_RING_PATH, LocalKeyRing
from services.suite import signing

#: Who a test's unnamed calls act as (a caller may also be named per call
#: with `Caller.metadata()`).
TEST_CALLER = Caller("acme", "tester", frozenset({"admin"}))


def key_ring(data_dir: Path) -> LocalKeyRing:
    return signing.key_ring(data_dir)


def minter(data_dir: Path, audience: str, caller: Caller = TEST_CALLER) -> TokenMinter:
    return signing.minter(data_dir, audience, caller)


def signed_channel(
    address: str,
    data_dir: Path,
    audience: str,
    *,
    caller: Caller = TEST_CALLER,
    credentials: grpc.ChannelCredentials | None = None,
) -> aio.Channel:
    """A channel whose calls carry a token for `caller` (or the one their metadata names)."""
    return signing.signed_channel(
        address, data_dir, audience, caller=caller, credentials=credentials
    )


def internal_token(data_dir: Path, audience: str, caller: Caller = TEST_CALLER) -> str:
    """A bearer token the `audience` service accepts (for the SDK's `token=`)."""
    return signing.internal_token(data_dir, audience, caller)


class _SigningInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """For sync channels: sign each call as `signed_channel` does for aio ones."""

    def __init__(self, minter: TokenMinter) -> None:
        self._minter = minter

    def _signed(self, details):
        metadata = self._minter.authorize(details.metadata or ())
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._signed(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._signed(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._signed(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._signed(details), requests)


def signed_sync_channel(
    address: str, data_dir: Path, audience: str, *, caller: Caller = TEST_CALLER
) -> grpc.Channel:
    """A blocking channel whose calls carry a token, like `signed_channel`."""
    return grpc.intercept_channel(
        grpc.insecure_channel(address), _SigningInterceptor(minter(data_dir, audience, caller))
    )


#: Callers of the ownership tests: an administrator (sees and manages every
#: tenant's objects) and two tenants.
ADMIN = Caller(tenant="ops", subject="test-admin", scopes=frozenset({"admin"}))
ACME = Caller(tenant="acme", subject="alice")
GLOBEX = Caller(tenant="globex", subject="bob")

#: Which audience a server's internal tokens must name, by the service it serves.
_AUDIENCES = {
    "lattice.v1.ModelRegistryService": "registry",
    "lattice.v1.TrainerService": "trainer",
    "lattice.v1.InferenceService": "inference",
}


def _server_minter(server: LatticeServer, caller: Caller) -> TokenMinter:
    """Signs as `caller` with the key ring `server` verifies against."""
    settings = server.settings
    ring = Path(settings.key_ring_file or settings.data_dir / DEFAULT_KEY_RING_PATH)
    audience = next(_AUDIENCES[s.name] for s in server.services if s.name in _AUDIENCES)
    return TokenMinter(LocalKeyRing.open_or_create(ring), audience=audience, service=caller)


def caller_channel(server: LatticeServer, caller: Caller = ADMIN) -> aio.Channel:
    """A channel to `server` whose calls act as `caller` (or the caller their
    metadata names), signed as a suite service would sign them."""
    return create_channel(server.address, minter=_server_minter(server, caller), trace_calls=False)


def sync_caller_channel(server: LatticeServer, caller: Caller = ADMIN) -> grpc.Channel:
    """A blocking channel to `server` whose calls act as `caller`."""
    return grpc.intercept_channel(
        grpc.insecure_channel(server.address),
        _SigningInterceptor(_server_minter(server, caller)),
    )
