"""Calling an internal service directly, as a suite service would.

Internal services refuse calls without an internal token. The embedded
stack, tests and benchmarks that drive one directly sign their calls with
the key ring in the server's data directory, exactly as the gateway does:
through a channel with a `TokenMinter`, or with a minted token handed to
the SDK as its bearer token.
"""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc import aio

from services.runtime.channels import create_channel
from services.runtime.identity import Caller
from services.runtime.internal_tokens import TokenMinter
from services.runtime.keys import DEFAULT_KEY_RING_PATH, LocalKeyRing


def key_ring(data_dir: Path) -> LocalKeyRing:
    """The suite's key ring in `data_dir`, created on first use."""
    return LocalKeyRing.open_or_create(data_dir / DEFAULT_KEY_RING_PATH)


def minter(data_dir: Path, audience: str, caller: Caller) -> TokenMinter:
    return TokenMinter(key_ring(data_dir), audience=audience, service=caller)


def signed_channel(
    address: str,
    data_dir: Path,
    audience: str,
    *,
    caller: Caller,
    credentials: grpc.ChannelCredentials | None = None,
) -> aio.Channel:
    """A channel whose calls carry a token for `caller` (or the one their metadata names)."""
    return create_channel(
        address,
        credentials=credentials,
        minter=minter(data_dir, audience, caller),
        trace_calls=False,
    )


def internal_token(data_dir: Path, audience: str, caller: Caller) -> str:
    """A bearer token the `audience` service accepts (for the SDK's `token=`)."""
    return minter(data_dir, audience, caller).token(caller)
