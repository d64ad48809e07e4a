"""One set of servers per module: starting gRPC servers is the slow part."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import lattice
from tests.support.sdk_servers import TEST_TOKEN, LatticeServices, running_services


@pytest.fixture(scope="module")
def services(tmp_path_factory) -> Iterator[LatticeServices]:
    data_dir = tmp_path_factory.mktemp("services")
    yield from running_services(data_dir, token=TEST_TOKEN, stream_delay=0.05)


@pytest.fixture
def client(services) -> Iterator[lattice.Client]:
    """The scripted inference and trainer."""
    with lattice.Client(services.address, TEST_TOKEN) as client:
        yield client


@pytest.fixture
def registry_client(services) -> Iterator[lattice.Client]:
    """The real registry, as the tenant `REGISTRY_CALLER`."""
    with lattice.Client(services.registry_address, services.registry_token()) as client:
        yield client


@pytest.fixture(scope="package")
def stack(tmp_path_factory):
    """Real registry + inference + gateway with a tiny model online (shared by the package)."""
    from services.suite.tiny_models import build_tiny_causal_lm, build_tiny_encoder
    from tests.sdk.real_stack import running_stack

    model_dir = build_tiny_causal_lm(tmp_path_factory.mktemp("model"), n_positions=512)
    encoder_dir = build_tiny_encoder(tmp_path_factory.mktemp("encoder"))
    yield from running_stack(tmp_path_factory.mktemp("stack"), model_dir, encoder_dir)
