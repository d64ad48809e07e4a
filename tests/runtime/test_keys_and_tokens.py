"""The key ring (versions, rotation, reload) and internal tokens, without gRPC."""

from __future__ import annotations

import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest

from lattice.errors import Unauthenticated
from services.runtime.identity import Caller, service_caller
from services.runtime.internal_tokens import CallerVerifier, TokenMinter
from services.runtime.keys import (
    PURPOSE_CACHE_SEAL,
    PURPOSE_INTERNAL_TOKEN,
    LocalKeyRing,
    UnknownKey,
    create_key_ring,
    rotate_key_ring,
)

ALICE = Caller("acme", "alice", frozenset({"registry:read"}))
SERVICE = service_caller("test")


def test_ring_is_private_versioned_and_rotates(tmp_path):
    path = tmp_path / "keys" / "ring.json"
    ring = LocalKeyRing.open_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = ring.current(PURPOSE_CACHE_SEAL)
    assert first.kid == "k1" and len(first.material) == 32
    assert ring.current(PURPOSE_INTERNAL_TOKEN).material != first.material  # one key per purpose

    assert rotate_key_ring(path) == 2
    reader = LocalKeyRing(path)
    assert reader.current(PURPOSE_CACHE_SEAL).kid == "k2"
    assert reader.find(PURPOSE_CACHE_SEAL, "k1") == first  # old versions still open
    with pytest.raises(UnknownKey):
        reader.find(PURPOSE_CACHE_SEAL, "k9")
    with pytest.raises(UnknownKey):
        reader.find(PURPOSE_CACHE_SEAL, "bogus")


def test_a_running_ring_picks_up_a_rotation(tmp_path):
    path = tmp_path / "ring.json"
    ring = LocalKeyRing.open_or_create(path)
    ring_fast = LocalKeyRing(path, reload_interval=0.0)
    assert ring_fast.current(PURPOSE_CACHE_SEAL).kid == "k1"
    assert ring.current(PURPOSE_CACHE_SEAL).kid == "k1"
    rotate_key_ring(path)
    assert ring_fast.current(PURPOSE_CACHE_SEAL).kid == "k2"
    assert ring.current(PURPOSE_CACHE_SEAL).kid == "k1"  # checks at most once a second
    time.sleep(1.05)
    assert ring.current(PURPOSE_CACHE_SEAL).kid == "k2"


def test_a_key_newer_than_the_ring_knows_is_looked_up_at_once(tmp_path):
    """A peer that rotated signs with the new version before this ring's next periodic
    check: `find` reads the file at once instead of refusing the peer's tokens."""
    path = tmp_path / "ring.json"
    ring = LocalKeyRing.open_or_create(path)
    assert ring.current(PURPOSE_CACHE_SEAL).kid == "k1"
    rotate_key_ring(path)
    assert ring.find(PURPOSE_CACHE_SEAL, "k2").kid == "k2"
    with pytest.raises(UnknownKey):
        ring.find(PURPOSE_CACHE_SEAL, "k7")


def test_a_corrupted_ring_keeps_the_keys_already_loaded(tmp_path):
    path = tmp_path / "ring.json"
    ring = LocalKeyRing(path, reload_interval=0.0) if create_key_ring(path) else None
    assert ring is not None
    before = ring.current(PURPOSE_CACHE_SEAL)
    path.write_text("{not json")
    assert ring.current(PURPOSE_CACHE_SEAL) == before


def test_services_starting_together_share_one_ring(tmp_path):
    path = tmp_path / "ring.json"
    with ThreadPoolExecutor(8) as pool:
        created = list(pool.map(lambda _: create_key_ring(path), range(8)))
    assert created.count(True) == 1
    assert len(json.loads(path.read_text())["versions"]) == 1
    assert not [p for p in os.listdir(tmp_path) if p != "ring.json"]  # no staging left


def test_tokens_round_trip_and_survive_a_rotation(tmp_path):
    path = tmp_path / "ring.json"
    ring = LocalKeyRing.open_or_create(path)
    minter = TokenMinter(ring, audience="registry", service=SERVICE)
    verifier = CallerVerifier(LocalKeyRing(path, reload_interval=0.0), audience="registry")
    old = minter.token(ALICE)
    assert minter.token(ALICE) == old  # reused while fresh
    assert verifier.verify(f"Bearer {old}") == ALICE
    rotate_key_ring(path)
    rotated = TokenMinter(LocalKeyRing(path), audience="registry", service=SERVICE)
    new = rotated.token(ALICE)
    assert jwt.get_unverified_header(new)["kid"] == "k2"
    assert verifier.verify(f"Bearer {new}") == ALICE
    assert CallerVerifier(LocalKeyRing(path), audience="registry").verify(f"Bearer {old}") == ALICE


def test_minter_signs_the_named_caller_and_drops_bare_headers(tmp_path):
    ring = LocalKeyRing.open_or_create(tmp_path / "ring.json")
    minter = TokenMinter(ring, audience="trainer", service=SERVICE)
    verifier = CallerVerifier(ring, audience="trainer")
    named = minter.authorize([*ALICE.metadata(), ("authorization", "Bearer user"), ("x", "1")])
    assert [k for k, _ in named] == ["x", "authorization"]
    assert verifier.verify(dict(named)["authorization"]) == ALICE
    unnamed = minter.authorize([("x", "1")])
    assert verifier.verify(dict(unnamed)["authorization"]) == SERVICE


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": "9999999999"},
        {"exp": 10**400},
        {"iat": "yesterday"},
        {"tenant": ""},
        {"tenant": 7},
        {"scope": ["admin"]},
        {"aud": "inference"},
        {"iss": "somebody"},
        {"tenant": "x" * 300},
    ],
)
def test_malformed_tokens_are_unauthenticated(tmp_path, claims):
    ring = LocalKeyRing.open_or_create(tmp_path / "ring.json")
    key = ring.current(PURPOSE_INTERNAL_TOKEN)
    now = int(time.time())
    body = {
        "iss": "lattice-internal",
        "aud": "registry",
        "sub": "alice",
        "tenant": "acme",
        "scope": "",
        "iat": now,
        "exp": now + 60,
        **claims,
    }
    token = jwt.encode(body, key.material, algorithm="HS256", headers={"kid": key.kid})
    with pytest.raises(Unauthenticated):
        CallerVerifier(ring, audience="registry").verify(f"Bearer {token}")


def test_unsigned_and_wrongly_signed_tokens_are_unauthenticated(tmp_path):
    ring = LocalKeyRing.open_or_create(tmp_path / "ring.json")
    verifier = CallerVerifier(ring, audience="registry")
    claims = {"iss": "lattice-internal", "aud": "registry", "sub": "a", "tenant": "acme"}
    claims |= {"iat": int(time.time()), "exp": int(time.time()) + 60}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})
    other = jwt.encode(claims, b"x" * 32, algorithm="HS256", headers={"kid": "k1"})
    no_kid = jwt.encode(claims, ring.current(PURPOSE_INTERNAL_TOKEN).material, algorithm="HS256")
    for token in (unsigned, other, no_kid, "a.b.c", ""):
        with pytest.raises(Unauthenticated):
            verifier.verify(f"Bearer {token}")
    with pytest.raises(Unauthenticated):
        verifier.verify("Basic abc")
    with pytest.raises(Unauthenticated):
        verifier.verify(None)
