"""Inference fixtures: tiny models built once per session, a real registry
and a real inference server per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.suite.embedded import Lab
from services.suite.tiny_models import build_tiny_causal_lm, build_tiny_encoder


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
