"""Bearer-token authentication with PyJWT.

Keys never come from the token: HMAC algorithms verify only with the
configured dev secret, and RS256/ES256 only with a public key from the JWKS
whose key type matches the algorithm, so the classic `alg` confusion
(RS256 public key used as an HMAC secret) and `alg: none` cannot pass.
Failures raise `Unauthenticated` with a reason a caller can act on and that
contains no key material; the token itself is never logged or traced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

import jwt
from jwt import PyJWK

from lattice.errors import Unauthenticated

log = logging.getLogger(__name__)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
#: Asymmetric algorithms we support, with the JWK key type each needs.
ASYMMETRIC_KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}


class AuthFailure(Unauthenticated):
    """UNAUTHENTICATED with a short machine label (`reason`) for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling, as established by a verified token."""

    subject: str
    tenant: str
    scopes: frozenset[str]
    expires_at: float


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    """What a token must satisfy."""

    issuer: str = "lattice"
    audience: str = "lattice"
    algorithms: tuple[str, ...] = ("HS256", "RS256", "ES256")
    hmac_secret: str = ""
    leeway_seconds: float = 30.0
    max_token_bytes: int = 8192
    tenant_claim: str = "tenant"
    #: Verified tokens remembered (0 = verify every time).
    cache_size: int = 10_000
    #: Longest a verified token is trusted without re-verifying.
    cache_seconds: float = 60.0


# --- JWKS -------------------------------------------------------------------------------


def file_fetcher(path: str | Path) -> Callable[[], Awaitable[str]]:
    """Reads a JWKS JSON document from a file (re-read on every refresh)."""

    async def fetch() -> str:
        return await asyncio.to_thread(Path(path).read_text)

    return fetch


def url_fetcher(url: str, timeout: float = 5.0) -> Callable[[], Awaitable[str]]:
    """Fetches a JWKS JSON document over HTTP(S) without blocking the event loop."""

    def get() -> str:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read(1 << 20).decode()

    async def fetch() -> str:
        return await asyncio.to_thread(get)

    return fetch


def parse_jwks(text: str) -> dict[str, PyJWK]:
    """Usable signing keys by kid: RSA and EC public keys only, never `oct`."""
    data = json.loads(text)
    keys: dict[str, PyJWK] = {}
    for raw in data.get("keys", []):
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig" or not raw.get("kid"):
            continue
        if raw.get("kty") not in ("RSA", "EC"):
            continue
        try:
            key = PyJWK.from_dict(raw)
        except jwt.PyJWTError:
            continue
        if key.algorithm_name in ASYMMETRIC_KEY_TYPES:
            keys[raw["kid"]] = key
    if not keys and data.get("keys"):
        log.warning("JWKS has no usable RS256/ES256 signing keys")
    return keys


class JwksKeys:
    """Public keys from a JWKS source, cached with a lifetime.

    The set is refreshed (in the background) once it is half its lifetime
    old; a kid we do not
    know triggers at most one refetch per `refetch_interval`, so random kids
    cannot make us hammer the source. When the source is down, the keys we
    have keep working until `lifetime` after they were fetched.
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[str]],
        *,
        lifetime: float = 300.0,
        refetch_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._lifetime = lifetime
        self._refetch_interval = refetch_interval
        self._clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._background: asyncio.Future | None = None
        #: Fetch attempts made (for tests and metrics).
        self.fetches = 0
        self.fetch_failures = 0

    async def key_for(self, kid: str) -> PyJWK:
        now = self._clock()
        usable = now - self._fetched_at < self._lifetime
        due = now - self._last_attempt >= self._refetch_interval
        if usable and kid in self._keys:
            # Known key: refresh a half-expired set in the background, never inline,
            # so a slow JWKS source cannot stall requests that need no new key.
            if due and now - self._fetched_at >= self._lifetime / 2 and self._background is None:
                self._background = asyncio.ensure_future(self._refresh())
                self._background.add_done_callback(self._refreshed)
            return self._keys[kid]
        if due:
            await self._refresh()
            now = self._clock()
        if now - self._fetched_at >= self._lifetime:
            self._keys = {}
            raise AuthFailure(
                "keys_unavailable",
                "signing keys are unavailable (JWKS source unreachable); try again later",
            )
        key = self._keys.get(kid)
        if key is None:
            raise AuthFailure("unknown_kid", f"unknown signing key id (kid) {kid[:64]!r}")
        return key

    def _refreshed(self, _task: asyncio.Future) -> None:
        self._background = None

    async def _refresh(self) -> None:
        async with self._lock:
            if self._clock() - self._last_attempt < self._refetch_interval:
                return  # another request refreshed while we waited
            self._last_attempt = self._clock()
            self.fetches += 1
            try:
                keys = parse_jwks(await self._fetch())
            except Exception as exc:  # source down or garbage: keep what we have
                self.fetch_failures += 1
                log.warning("JWKS refresh failed (%s); keeping cached keys", type(exc).__name__)
                return
            self._keys = keys
            self._fetched_at = self._clock()


# --- verification ---------------------------------------------------------------------


class _VerifiedCache:
    """LRU of tokens already verified, each trusted until min(exp, now + ttl)."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size = size
        self._ttl = ttl
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, token: str, now: float) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        until, principal = entry
        if now >= until:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return principal

    def put(self, token: str, principal: Principal, now: float) -> None:
        self._entries[token] = (min(principal.expires_at, now + self._ttl), principal)
        self._entries.move_to_end(token)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


_DECODE_FAILURES: Sequence[tuple[type[Exception], str, str]] = (
    (jwt.ExpiredSignatureError, "expired", "token has expired"),
    (
        jwt.ImmatureSignatureError,
        "not_yet_valid",
        "token is not yet valid (nbf or iat in the future)",
    ),
    (jwt.InvalidAudienceError, "wrong_audience", "token audience (aud) is not accepted here"),
    (jwt.InvalidIssuerError, "wrong_issuer", "token issuer (iss) is not accepted here"),
    (jwt.InvalidSignatureError, "bad_signature", "token signature is invalid"),
    (jwt.InvalidIssuedAtError, "bad_claim", "token iat claim must be a number"),
)


#: The latest time claim we read (the last second of year 9999); later is absurd.
MAX_TIME_CLAIM = 253_402_300_799


def check_time_claims(claims: dict) -> None:
    """exp/nbf/iat must be finite JSON numbers in a sane range.

    PyJWT accepts a numeric *string* ("exp": "9999999999") and any integer
    however large (10**400 overflows a float later); both are refused here,
    as UNAUTHENTICATED, before anything converts them.
    """
    for name in ("exp", "nbf", "iat"):
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AuthFailure("bad_claim", f"token {name} claim must be a number (seconds)")
        if not 0 <= value <= MAX_TIME_CLAIM:  # also false for NaN
            raise AuthFailure("bad_claim", f"token {name} claim is out of range")


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The token from exactly one `authorization: Bearer <token>` entry."""
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        raise AuthFailure(
            "missing", "missing credentials: send 'authorization: Bearer <token>' metadata"
        )
    if len(values) > 1:
        raise AuthFailure("malformed", "more than one authorization metadata entry")
    value = values[0]
    if isinstance(value, bytes):
        raise AuthFailure("malformed", "authorization metadata must be text")
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise AuthFailure("malformed", "authorization metadata must be 'Bearer <token>'")
    return token


class Authenticator:
    """Turns the `authorization` metadata of a call into a `Principal`."""

    def __init__(
        self,
        config: AuthConfig,
        keys: JwksKeys | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = set(config.algorithms) - HMAC_ALGORITHMS - set(ASYMMETRIC_KEY_TYPES)
        if unknown:
            raise ValueError(f"unsupported JWT algorithms: {sorted(unknown)}")
        self._config = config
        self._keys = keys
        self._clock = clock
        self._allowed = frozenset(config.algorithms)
        self._cache = (
            _VerifiedCache(config.cache_size, config.cache_seconds) if config.cache_size else None
        )

    async def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal:
        return await self.verify(bearer_token(metadata))

    async def verify(self, token: str) -> Principal:
        config = self._config
        if len(token) > config.max_token_bytes:
            raise AuthFailure("too_large", f"token is larger than {config.max_token_bytes} bytes")
        now = self._clock()
        if self._cache is not None:
            cached = self._cache.get(token, now)
            if cached is not None:
                return cached
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthFailure("malformed", "token is not a well-formed JWT") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._allowed:
            raise AuthFailure(
                "algorithm",
                f"token algorithm is not accepted; use one of {sorted(self._allowed)}",
            )
        key = await self._key_for(algorithm, header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway_seconds,
                options={"require": ["exp", "iat", "iss", "aud"], "verify_nbf": True},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthFailure(
                "missing_claim", f"token lacks the required {exc.claim!r} claim"
            ) from None
        except jwt.PyJWTError as exc:
            for kind, reason, message in _DECODE_FAILURES:
                if isinstance(exc, kind):
                    raise AuthFailure(reason, message) from None
            raise AuthFailure("malformed", "token could not be verified") from None
        except (ValueError, TypeError, OverflowError):  # e.g. exp = 1e400 (inf)
            raise AuthFailure("bad_claim", "token time claims must be numbers") from None
        check_time_claims(claims)
        principal = self._principal(claims)
        if self._cache is not None:
            self._cache.put(token, principal, now)
        return principal

    async def _key_for(self, algorithm: str, header: dict) -> str | bytes | PyJWK:
        if algorithm in HMAC_ALGORITHMS:
            if not self._config.hmac_secret:
                raise AuthFailure(
                    "algorithm", "HMAC-signed tokens are not accepted by this gateway"
                )
            return self._config.hmac_secret
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthFailure("unknown_kid", "token header lacks a key id (kid)")
        if self._keys is None:
            raise AuthFailure("unknown_kid", "no public keys are configured (JWKS)")
        jwk = await self._keys.key_for(kid)
        if jwk.algorithm_name != algorithm:
            raise AuthFailure("algorithm", "token algorithm does not match its signing key")
        return jwk

    def _principal(self, claims: dict) -> Principal:
        tenant = claims.get(self._config.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise AuthFailure(
                "missing_claim", f"token lacks the required {self._config.tenant_claim!r} claim"
            )
        scopes: set[str] = set()
        raw = claims.get("scope", claims.get("scp", claims.get("scopes", "")))
        if isinstance(raw, str):
            scopes.update(raw.split())
        elif isinstance(raw, list):
            scopes.update(s for s in raw if isinstance(s, str))
        subject = claims.get("sub", "")
        return Principal(
            subject=subject if isinstance(subject, str) else "",
            tenant=tenant,
            scopes=frozenset(scopes),
            expires_at=float(claims["exp"]),
        )
