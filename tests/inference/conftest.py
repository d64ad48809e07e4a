"""Inference fixtures: tiny models built once per session, a real registry
and a real inference server per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.inference.support import EMBEDDING, Lab
from tests.support.tiny_models import build_tiny_causal_lm, build_tiny_encoder


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """Two versions of a causal LM (different weights) and an encoder."""
    root = tmp_path_factory.mktemp("models")
    return {
        "lm1": build_tiny_causal_lm(root / "lm1", seed=1),
        "lm2": build_tiny_causal_lm(root / "lm2", seed=2),
        "enc": build_tiny_encoder(root / "enc", seed=3),
    }


@pytest.fixture
async def lab(tmp_path) -> AsyncIterator[Lab]:
    """Registry + inference without a response cache."""
    lab = await Lab(tmp_path).start()
    yield lab
    await lab.stop()


@pytest.fixture
async def cached_lab(tmp_path, redis_server) -> AsyncIterator[Lab]:
    """Registry + inference with a real Redis response cache and no local tier,
    so that every lookup reaches Redis (the tier is tested with `tiered_lab`)."""
    lab = await Lab(
        tmp_path, redis_url=redis_server.url, cache_retry_seconds=0.2, cache_local_entries=0
    ).start()
    yield lab
    await lab.stop()


@pytest.fixture
async def tiered_lab(tmp_path, redis_server) -> AsyncIterator[Lab]:
    """Registry + inference with Redis and the default in-process tier in front."""
    lab = await Lab(tmp_path, redis_url=redis_server.url, cache_retry_seconds=0.2).start()
    yield lab
    await lab.stop()


async def deploy_lm(lab: Lab, model_dirs, name: str = "lm") -> None:
    """Register lm1 as version 1 of `name`, put it online, wait until READY."""
    from services.inference.serving import VersionState

    await lab.create_model(name)
    await lab.register(name, model_dirs["lm1"])
    await lab.deploy(name, {1: 100})
    await lab.wait_state(name, 1, VersionState.READY)


async def deploy_encoder(lab: Lab, model_dirs, name: str = "enc") -> None:
    from services.inference.serving import VersionState

    await lab.create_model(name, EMBEDDING)
    await lab.register(name, model_dirs["enc"])
    await lab.deploy(name, {1: 100})
    await lab.wait_state(name, 1, VersionState.READY)
