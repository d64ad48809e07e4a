"""One set of servers per module: starting gRPC servers is the slow part."""

from __future__ import annotations

import pytest

from tests.support.sdk_servers import TEST_TOKEN, LatticeServices, running_services


@pytest.fixture(scope="module")
def services() -> LatticeServices:
    yield from running_services(token=TEST_TOKEN, stream_delay=0.05)


@pytest.fixture
def client(services):
    import lattice

    with lattice.Client(services.address, TEST_TOKEN) as client:
        yield client
