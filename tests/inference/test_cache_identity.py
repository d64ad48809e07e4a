"""Cached answers are bound to one version, also when a version has no artifact digest."""

from __future__ import annotations

from services.inference.backends import Task
from services.inference.cache import cache_key
from services.inference.serving import ServingVersion

REQUEST = {"prompt": "def ", "max_new_tokens": 8}


def test_versions_without_digest_never_share_cache_keys():
    """triton:// versions carry no digest; two of them must not answer for each other."""
    first = ServingVersion("served-by-triton", 1, "", Task.GENERATE)
    second = ServingVersion("served-by-triton", 2, "", Task.GENERATE)
    other_model = ServingVersion("another-model", 1, "", Task.GENERATE)
    keys = {cache_key(v.cache_identity, REQUEST) for v in (first, second, other_model)}
    assert len(keys) == 3


def test_versions_with_the_same_bytes_share_answers():
    """The same artifact under two version numbers is the same model: one cache entry."""
    digest = "ab" * 32
    first = ServingVersion("m", 1, digest, Task.GENERATE)
    second = ServingVersion("m", 2, digest, Task.GENERATE)
    assert cache_key(first.cache_identity, REQUEST) == cache_key(second.cache_identity, REQUEST)
