"""Development tokens: HS256 JWTs signed with the gateway's dev secret.

`lattice token` calls `mint_dev_token` so a developer can talk to a gateway
started by `lattice up` (which passes the same secret to the gateway as
`LATTICE_DEV_JWT_SECRET`). Production tokens come from a real identity
provider (RS256/ES256 via JWKS); this helper never needs server packages.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import jwt

#: Where `lattice up` keeps the development HMAC secret in its data directory
#: (`lattice token` reads it from there).
DEV_SECRET_FILE = "dev-jwt-secret"
#: Where `lattice up --tls` keeps its development CA certificate in the data
#: directory; clients asked for TLS without a root certificate trust it.
DEV_CA_FILE = "tls/ca.pem"
#: The suite's own tenant: what its services act as when they call each other
#: (registry views, artifact downloads) and whose quota `lattice up`'s readiness
#: probes spend. Never a customer's; defined once here, imported everywhere.
SYSTEM_TENANT = "lattice-system"
#: Names the system tenant had before it was unified; stores written then are
#: rewritten to SYSTEM_TENANT when they are opened.
LEGACY_SYSTEM_TENANTS = ("lattice-suite",)
DEFAULT_ISSUER = "lattice"
DEFAULT_AUDIENCE = "lattice"
#: Every scope the gateway knows; `admin` implies the others.
ALL_SCOPES = (
    "inference:invoke",
    "registry:read",
    "registry:write",
    "trainer:submit",
    "trainer:read",
    "admin",
)
#: What a token carries unless admin is asked for: every scope but `admin`, so a
#: developer sees what a tenant sees (admin would hide every ownership bug).
TENANT_SCOPES = tuple(scope for scope in ALL_SCOPES if scope != "admin")


def mint_dev_token(
    secret: str,
    *,
    tenant: str,
    scopes: Iterable[str] = ("inference:invoke",),
    subject: str = "dev",
    lifetime: float = 3600.0,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
) -> str:
    """An HS256 token the gateway accepts when it runs with the same dev secret."""
    if not secret:
        raise ValueError("a dev secret is required (the gateway's LATTICE_DEV_JWT_SECRET)")
    if not tenant:
        raise ValueError("tenant is required")
    if lifetime <= 0:
        raise ValueError("lifetime must be positive")
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "tenant": tenant,
        "scope": " ".join(dict.fromkeys(scopes)),
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm="HS256")
