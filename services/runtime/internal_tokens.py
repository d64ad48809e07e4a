"""Short-lived internal tokens: how a caller's identity crosses a hop, signed.

A hop that knows who it acts for (the gateway after authenticating a user;
a service acting for itself) names the caller with `Caller.metadata()`. A
channel built with a `TokenMinter` turns that into one HS256 JWT before the
call leaves the process: tenant, subject and scopes as claims, `aud` the
target service, `exp` a few minutes away, the key id in the header. The
bare identity headers never cross the wire. The receiving server's
`CallerVerifier` checks signature, audience and expiry and hands the
`Caller` to `caller_of`; nothing else identifies a caller.

The key comes from the suite's key ring (purpose `PURPOSE_INTERNAL_TOKEN`),
so `lattice keys rotate` renews it: new tokens name the new key id, tokens
already issued still verify until they expire.

Both sides cache: a minter reuses a token for the first half of its life,
and a verifier remembers a verified token until it expires, so a hot path
costs a dict lookup per call, not an HMAC.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence

import jwt

from lattice.errors import Unauthenticated
from services.runtime.identity import (
    IDENTITY_KEYS,
    MAX_IDENTITY_CHARS,
    Caller,
    caller_from_metadata,
    caller_var,
)
from services.runtime.keys import PURPOSE_INTERNAL_TOKEN, KeyManager, UnknownKey

AUTHORIZATION_KEY = "authorization"
ISSUER = "lattice-internal"
ALGORITHM = "HS256"
DEFAULT_LIFETIME_SECONDS = 300.0
#: Internal tokens are short-lived: one expiring later than this is refused.
MAX_LIFETIME_SECONDS = 24 * 3600.0
#: Longest token a verifier reads (a real one is ~400 bytes).
MAX_TOKEN_BYTES = 4096
_STRIPPED = frozenset((*IDENTITY_KEYS, AUTHORIZATION_KEY))


class TokenMinter:
    """Signs callers into bearer tokens for one target service (`audience`).

    `service` is who this process is: the caller named when a call carries
    no identity and is not made while serving a verified caller (a service's
    own background calls, such as inference watching the registry).
    """

    def __init__(
        self,
        keys: KeyManager,
        *,
        audience: str,
        service: Caller,
        lifetime: float = DEFAULT_LIFETIME_SECONDS,
        clock=time.time,
    ) -> None:
        self._keys = keys
        self._audience = audience
        self._service = service
        self._lifetime = lifetime
        self._clock = clock
        # (caller, kid) -> (token, reuse_until)
        self._cache: dict[tuple[Caller, str], tuple[str, float]] = {}

    @property
    def audience(self) -> str:
        return self._audience

    def token(self, caller: Caller) -> str:
        """A token naming `caller`, fresh for at least half its lifetime."""
        key = self._keys.current(PURPOSE_INTERNAL_TOKEN)
        now = self._clock()
        cached = self._cache.get((caller, key.kid))
        if cached is not None and now < cached[1]:
            return cached[0]
        issued = int(now)
        claims = {
            "iss": ISSUER,
            "aud": self._audience,
            "sub": caller.subject,
            "tenant": caller.tenant,
            "scope": " ".join(sorted(caller.scopes)),
            "iat": issued,
            "exp": issued + int(self._lifetime),
        }
        token = jwt.encode(claims, key.material, algorithm=ALGORITHM, headers={"kid": key.kid})
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[(caller, key.kid)] = (token, now + self._lifetime / 2)
        return token

    def authorize(self, metadata: Sequence[tuple[str, str | bytes]]) -> list[tuple[str, str]]:
        """`metadata` with any identity headers and authorization replaced by a signed token.

        The caller signed is the one the metadata names, else the verified caller
        of the RPC being served, else this service itself.
        """
        kept: list[tuple[str, str]] = []
        named = False
        for key, value in metadata:
            if key in _STRIPPED:
                named = named or key in IDENTITY_KEYS
                continue
            kept.append((key, value))  # type: ignore[arg-type]
        caller = caller_from_metadata(metadata) if named else caller_var.get() or self._service
        kept.append((AUTHORIZATION_KEY, f"Bearer {self.token(caller)}"))
        return kept


class CallerVerifier:
    """Verifies internal tokens addressed to one service (`audience`)."""

    def __init__(
        self,
        keys: KeyManager,
        *,
        audience: str,
        leeway: float = 30.0,
        cache_size: int = 10_000,
        clock=time.time,
    ) -> None:
        self._keys = keys
        self._audience = audience
        self._leeway = leeway
        self._cache_size = cache_size
        self._clock = clock
        self._cache: collections.OrderedDict[str, tuple[Caller, float]] = collections.OrderedDict()

    def verify(self, authorization: str | bytes | None) -> Caller:
        """The caller a bearer token names; Unauthenticated for anything else."""
        if not authorization or not isinstance(authorization, str):
            raise Unauthenticated(
                "no credentials: internal services accept only calls through the gateway "
                "or from another suite service"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("credentials must be 'Bearer <internal token>'")
        cached = self._cache.get(token)
        if cached is not None:
            if self._clock() < cached[1] + self._leeway:
                return cached[0]
            del self._cache[token]
        caller, expires = self._decode(token)
        self._cache[token] = (caller, expires)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return caller

    def _decode(self, token: str) -> tuple[Caller, float]:
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            if header.get("alg") != ALGORITHM or not isinstance(kid, str):
                raise Unauthenticated("internal token has the wrong algorithm or no key id")
            key = self._keys.find(PURPOSE_INTERNAL_TOKEN, kid)
            claims = jwt.decode(
                token,
                key.material,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=ISSUER,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "aud", "iss", "sub"]},
            )
        except UnknownKey:
            raise Unauthenticated("internal token signed with an unknown key") from None
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
            raise Unauthenticated("internal token is invalid or expired") from None
        tenant, subject, scope = claims.get("tenant"), claims.get("sub"), claims.get("scope", "")
        exp = claims.get("exp")
        if not (isinstance(tenant, str) and tenant and isinstance(subject, str)):
            raise Unauthenticated("internal token names no caller")
        if not isinstance(scope, str) or not isinstance(exp, int):
            raise Unauthenticated("internal token is malformed")
        if exp > self._clock() + MAX_LIFETIME_SECONDS:
            raise Unauthenticated("internal token lives implausibly long")
        if any(len(v) > MAX_IDENTITY_CHARS for v in (tenant, subject, scope)):
            raise Unauthenticated("internal token is malformed")
        return Caller(tenant, subject or tenant, frozenset(scope.split())), float(exp)
