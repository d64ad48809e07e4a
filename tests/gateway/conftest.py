"""Gateway fixtures: a real registry, real inference replicas and real gateways."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.gateway.support import SigningKeys, Stack


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> SigningKeys:
    return SigningKeys.create(tmp_path_factory.mktemp("jwks"))


@pytest.fixture
async def stack(tmp_path) -> AsyncIterator[Stack]:
    stack = Stack(tmp_path)
    yield stack
    await stack.close()
