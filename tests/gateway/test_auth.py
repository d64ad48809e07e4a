"""Authentication: the JWT attack table against a real gateway, and the JWKS cache rules."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lattice.tokens import mint_dev_token
from lattice.v1 import inference_pb2
from services.gateway.auth import AuthConfig, Authenticator, AuthFailure, JwksKeys
from services.gateway.server import build_server
from tests.gateway.support import SECRET, SigningKeys, bearer, claims, token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, payload: dict, signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(payload).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _hs256_with(key: bytes, payload: dict, kid: str = "rsa-1") -> str:
    """An HS256 token whose HMAC key is `key` (PyJWT refuses to make these; attackers don't)."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64(json.dumps(payload).encode())
    signature = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(signature)}"


def _tampered(keys: SigningKeys) -> str:
    head, _, signature = keys.sign(claims()).split(".")
    return f"{head}.{_b64(json.dumps(claims(tenant='victim', scope='admin')).encode())}.{signature}"


def attack_table(keys: SigningKeys) -> dict[str, list[tuple[str, str]]]:
    now = int(time.time())
    public_pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "alg none": bearer(_unsigned({"alg": "none", "typ": "JWT"}, claims())),
        "alg NoNe": bearer(_unsigned({"alg": "NoNe", "typ": "JWT"}, claims())),
        "empty signature": bearer(_unsigned({"alg": "HS256", "typ": "JWT"}, claims())),
        "RS256->HS256 with the public key": bearer(_hs256_with(public_pem, claims())),
        "tampered payload, old signature": bearer(_tampered(keys)),
        "expired beyond leeway": bearer(keys.sign(claims(exp=now - 120, iat=now - 600))),
        "nbf in the future": bearer(keys.sign(claims(nbf=now + 600))),
        "iat in the future": bearer(keys.sign(claims(iat=now + 600))),
        "missing exp": bearer(keys.sign(claims(exp=None))),
        "exp as a numeric string": bearer(keys.sign(claims(exp=str(now + 300)))),
        "exp = 10**400": bearer(keys.sign(claims(exp=10**400))),
        "exp = Infinity": bearer(keys.sign(claims(exp=float("inf")))),
        "exp = NaN": bearer(keys.sign(claims(exp=float("nan")))),
        "exp = true": bearer(keys.sign(claims(exp=True))),
        "exp past year 9999": bearer(keys.sign(claims(exp=10**12))),
        "nbf as a string": bearer(keys.sign(claims(nbf="yesterday"))),
        "nbf = -10**400": bearer(keys.sign(claims(nbf=-(10**400)))),
        "iat as a numeric string": bearer(keys.sign(claims(iat=str(now)))),
        "iat = 10**400": bearer(keys.sign(claims(iat=10**400))),
        "missing iat": bearer(keys.sign(claims(iat=None))),
        "wrong aud": bearer(keys.sign(claims(aud="someone-else"))),
        "wrong iss": bearer(keys.sign(claims(iss="https://evil.example"))),
        "unknown kid": bearer(keys.sign(claims(), kid="rsa-unknown")),
        "HS256 with the wrong secret": bearer(jwt.encode(claims(), "not-the-secret-" + "x" * 24)),
        "no authorization metadata": [],
        "malformed header (scheme)": [("authorization", f"Token {token()}")],
        "malformed header (empty)": [("authorization", "Bearer ")],
        "malformed header (garbage)": [("authorization", "Bearer not.a.jwt")],
        "two authorization entries": [*bearer(token()), *bearer(token())],
        "token over the size cap": bearer("e" * 9000),
    }


@pytest.fixture
def keys(signing_keys, tmp_path) -> SigningKeys:
    """The session's keys with a JWKS file this test may change."""
    own = SigningKeys(signing_keys.rsa, signing_keys.ec, tmp_path / "jwks.json")
    own.publish("rsa-1", "ec-1")
    return own


async def test_attack_table_is_refused_unauthenticated(stack, keys, caplog):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    await stack.start_inference(1)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway = await build_server(
        stack.settings(jwks_file=str(keys.jwks_path)), tracer_provider=provider
    )
    await gateway.start()
    stack.gateways.append(gateway)
    stub = stack.inference_stub(gateway)
    request = inference_pb2.GenerateRequest(model="chat", prompt="hi")
    caplog.set_level(logging.DEBUG)

    # Controls: each kind of good token works, so the refusals below mean something.
    for good in (token(), keys.sign(claims(), "rsa-1"), keys.sign(claims(), "ec-1")):
        response = await stub.Generate(request, metadata=bearer(good))
        assert response.model_version == 1

    table = attack_table(keys)
    for case, metadata in table.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Generate(request, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, case
        assert "BEGIN" not in caught.value.details() and SECRET not in caught.value.details()

    # The token never appears in logs or spans, whether accepted or refused.
    secrets_seen = [v for md in table.values() for _, v in md if len(v) > 40]
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    spans = "\n".join(str(dict(s.attributes or {})) for s in exporter.get_finished_spans())
    # Each stage has its span, in the RPC's trace (the server span is their parent).
    for _ in range(50):  # a server span ends just after its reply reaches the client
        finished = exporter.get_finished_spans()
        ended = {s.context.span_id for s in finished}
        if all(s.parent.span_id in ended for s in finished if s.name.startswith("gateway.")):
            break
        await asyncio.sleep(0.05)
    names = {span.name for span in finished}
    assert {"gateway.authn", "gateway.authz", "gateway.route", "gateway.quota"} <= names
    assert "upstream Generate" in names
    servers = {
        s.context.span_id: s for s in finished if s.name.endswith("InferenceService/Generate")
    }
    for stage in (s for s in finished if s.name.startswith(("gateway.", "upstream "))):
        parent = servers[stage.parent.span_id]
        assert stage.context.trace_id == parent.context.trace_id
    for value in [*secrets_seen, token()]:
        raw = value.removeprefix("Bearer ")
        for part in (raw, raw.split(".")[-1]):
            if len(part) >= 16:
                assert part not in text
                assert part not in spans


async def test_a_one_megabyte_token_is_refused(stack):
    """gRPC itself caps metadata (default 8-16 KiB): a 1 MB header never reaches the gateway.

    The transport refuses it before any handler runs; it is never accepted. Below the
    transport limit, the gateway's own cap answers UNAUTHENTICATED (see the table).
    """
    await stack.start_registry()
    await stack.start_inference(1)
    gateway = await stack.start_gateway()
    stub = stack.inference_stub(gateway)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(
            inference_pb2.GenerateRequest(model="chat", prompt="hi"),
            metadata=bearer("a" * (1 << 20)),
        )
    assert caught.value.code() in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # gRPC: "metadata size exceeds hard limit"
    )
    assert not stack.inference[0][1].requests
    # The domain check, which is what answers once the transport lets a large token through:
    authenticator = Authenticator(AuthConfig(hmac_secret=SECRET))
    with pytest.raises(AuthFailure, match="larger than"):
        await authenticator.verify("a" * (1 << 20))


async def test_key_removed_from_jwks_is_refused_after_cache_expiry(stack, keys):
    await stack.start_registry()
    await stack.model("chat", 1, [(1, 100)])
    await stack.start_inference(1)
    gateway = await stack.start_gateway(
        jwks_file=str(keys.jwks_path),
        jwks_cache_seconds=1.0,
        jwks_refetch_seconds=0.1,
        jwt_cache_size=0,
    )
    stub = stack.inference_stub(gateway)
    request = inference_pb2.GenerateRequest(model="chat", prompt="hi")
    signed = keys.sign(claims(), "ec-1")
    assert (await stub.Generate(request, metadata=bearer(signed))).text
    keys.publish("rsa-1")  # ec-1 revoked at the source
    await asyncio.sleep(1.1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Generate(request, metadata=bearer(signed))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "kid" in caught.value.details()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_unknown_kids_refetch_at_most_once_per_interval(keys):
    clock = _Clock()
    fetches = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        return keys.jwks_path.read_text()

    source = JwksKeys(fetch, lifetime=300, refetch_interval=30, clock=clock)
    await source.key_for("rsa-1")
    assert fetches == 1
    for i in range(50):
        with pytest.raises(AuthFailure):
            await source.key_for(f"random-{i}")
    assert fetches == 1  # inside the interval: no refetch at all
    clock.now += 31
    with pytest.raises(AuthFailure):
        await source.key_for("random-x")
    with pytest.raises(AuthFailure):
        await source.key_for("random-y")
    assert fetches == 2
    # A key published later is found on the next allowed refetch.
    keys.publish("rsa-1", "ec-1", "rsa-2")
    clock.now += 31
    assert (await source.key_for("rsa-2")).key_id == "rsa-2"
    assert fetches == 3


async def test_source_down_keeps_cached_keys_until_they_expire(keys):
    clock = _Clock()
    up = True

    async def fetch() -> str:
        if not up:
            raise OSError("connection refused")
        return keys.jwks_path.read_text()

    source = JwksKeys(fetch, lifetime=100, refetch_interval=5, clock=clock)
    authenticator = Authenticator(AuthConfig(cache_size=0), source)
    signed = keys.sign(claims(), "rsa-1")
    assert (await authenticator.verify(signed)).tenant == "acme"
    up = False
    clock.now += 60  # stale: a refresh is attempted and fails, cached keys still work
    assert (await authenticator.verify(signed)).tenant == "acme"
    clock.now += 41  # past the lifetime: no keys to trust any more
    with pytest.raises(AuthFailure, match="unavailable"):
        await authenticator.verify(signed)
    up = True
    clock.now += 5
    assert (await authenticator.verify(signed)).tenant == "acme"


async def test_hmac_never_verifies_with_an_asymmetric_key_even_if_configured(keys):
    """Even an HMAC secret that *is* the public key cannot verify an RS256 token as HS256."""
    public_pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    source = JwksKeys(lambda: _read(keys), lifetime=300, refetch_interval=30)
    authenticator = Authenticator(AuthConfig(hmac_secret="", cache_size=0), source)
    with pytest.raises(AuthFailure, match="HMAC"):
        await authenticator.verify(_hs256_with(public_pem, claims()))
    with pytest.raises(AuthFailure, match="algorithm"):  # kid says RSA, header says ES256
        await authenticator.verify(_unsigned({"alg": "ES256", "kid": "rsa-1"}, claims(), b"x" * 64))


async def _read(keys: SigningKeys) -> str:
    return keys.jwks_path.read_text()


async def test_verified_token_cache_respects_expiry():
    now = [time.time()]
    authenticator = Authenticator(
        AuthConfig(hmac_secret=SECRET, cache_size=10, cache_seconds=60), clock=lambda: now[0]
    )
    short = mint_dev_token(SECRET, tenant="acme", lifetime=5)
    assert (await authenticator.verify(short)).tenant == "acme"
    assert (await authenticator.verify(short)).tenant == "acme"  # from the cache
    now[0] += 3600  # the cache must not outlive exp; PyJWT then checks the real clock
    authenticator._clock = lambda: now[0]
    principal = authenticator._cache.get(short, now[0])
    assert principal is None


async def test_scopes_and_claims_become_the_principal():
    authenticator = Authenticator(AuthConfig(hmac_secret=SECRET))
    principal = await authenticator.verify(
        mint_dev_token(SECRET, tenant="t1", scopes=["registry:read", "admin"], subject="alice")
    )
    assert principal.tenant == "t1"
    assert principal.subject == "alice"
    assert principal.scopes == {"registry:read", "admin"}
    no_tenant = jwt.encode(claims(tenant=None), SECRET)
    with pytest.raises(AuthFailure, match="tenant"):
        await authenticator.verify(no_tenant)


async def test_jwks_from_a_url(keys):
    """A real HTTP JWKS endpoint; when it goes away, cached keys keep verifying."""
    import functools
    import http.server
    import threading

    from services.gateway.auth import url_fetcher

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(keys.jwks_path.parent)
    )
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    clock = _Clock()
    source = JwksKeys(url_fetcher(url, timeout=2), lifetime=100, refetch_interval=1, clock=clock)
    authenticator = Authenticator(AuthConfig(cache_size=0), source)
    signed = keys.sign(claims(), "ec-1")
    try:
        assert (await authenticator.verify(signed)).tenant == "acme"
    finally:
        server.shutdown()
        server.server_close()
    clock.now += 60  # half-expired: refreshed in the background, which fails
    assert (await authenticator.verify(signed)).tenant == "acme"
    for _ in range(100):
        if source.fetch_failures:
            break
        await asyncio.sleep(0.02)
    assert source.fetch_failures == 1
    assert (await authenticator.verify(signed)).tenant == "acme"
