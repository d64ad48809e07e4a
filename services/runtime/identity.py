"""Who is calling a service: the one place a service learns its caller.

Servicers call `caller_of(context)` and hand the `Caller` to their domain
classes, which scope every read and write to `caller.tenant` (another
tenant's resource is NOT_FOUND) unless `caller.admin`.

How the identity travels: a hop names the caller with `Caller.metadata()`
(`x-lattice-tenant`, `x-lattice-subject`, `x-lattice-scopes`), and the
channel it calls through (built with a `TokenMinter`) replaces those
headers with a short-lived token signed from the suite's key ring
(`services.runtime.internal_tokens`). The receiving server verifies that
token before any handler runs and records the verified caller in
`caller_var`; `caller_of` reads only that. Bare identity headers arriving at
a server are never believed: a direct call without a valid token is
refused with UNAUTHENTICATED before it reaches a servicer.
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Iterable

from grpc import aio

from lattice.errors import Unauthenticated
from lattice.tokens import SYSTEM_TENANT

TENANT_KEY = "x-lattice-tenant"
SUBJECT_KEY = "x-lattice-subject"
SCOPES_KEY = "x-lattice-scopes"
ADMIN_SCOPE = "admin"
#: What a suite service acting for itself holds: it sees every tenant.
SERVICE_SCOPES = frozenset({ADMIN_SCOPE})
IDENTITY_KEYS = frozenset((TENANT_KEY, SUBJECT_KEY, SCOPES_KEY))
#: Identity values longer than this are refused, not truncated.
MAX_IDENTITY_CHARS = 256


@dataclasses.dataclass(frozen=True)
class Caller:
    """An authenticated caller: its tenant, its subject and the scopes it holds."""

    tenant: str
    subject: str
    scopes: frozenset[str] = frozenset()

    @property
    def admin(self) -> bool:
        """Admins see and manage every tenant's resources."""
        return ADMIN_SCOPE in self.scopes

    def may_see(self, owner: str) -> bool:
        """Whether a resource owned by `owner` exists for this caller."""
        return self.admin or owner == self.tenant

    def metadata(self) -> list[tuple[str, str]]:
        """The metadata a trusted hop forwards so the next service knows the caller."""
        return [
            (TENANT_KEY, self.tenant),
            (SUBJECT_KEY, self.subject),
            (SCOPES_KEY, " ".join(sorted(self.scopes))),
        ]


def service_caller(service: str) -> Caller:
    """The identity a suite service uses for its own calls: it must see every tenant.

    The registry views of the gateway and inference replicate the whole
    registry (routing and serving need every model), and inference downloads
    any online version's artifact, so they act as admins of SYSTEM_TENANT.
    """
    return Caller(tenant=SYSTEM_TENANT, subject=f"service:{service}", scopes=SERVICE_SCOPES)


def caller_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> Caller:
    """The caller that outgoing identity metadata names (`Caller.metadata()`).

    A channel's `TokenMinter` uses this to sign the caller a hop acts for;
    nothing inbound is ever read this way (see `caller_of`). Unauthenticated
    when the metadata names no tenant.
    """
    values: dict[str, str] = {}
    for key, value in metadata:
        if key in (TENANT_KEY, SUBJECT_KEY, SCOPES_KEY) and isinstance(value, str):
            values[key] = value
    tenant = values.get(TENANT_KEY, "")
    if not tenant:
        raise Unauthenticated("no caller identity: call this service through the gateway")
    if any(len(v) > MAX_IDENTITY_CHARS for v in values.values()):
        raise Unauthenticated("caller identity is malformed")
    return Caller(
        tenant=tenant,
        subject=values.get(SUBJECT_KEY, "") or tenant,
        scopes=frozenset(values.get(SCOPES_KEY, "").split()),
    )


#: The verified caller of the RPC being served; set by the server's per-RPC wrapper.
caller_var: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "lattice_caller", default=None
)


def caller_of(context: aio.ServicerContext) -> Caller:
    """The verified caller of the RPC being served (see the module docstring).

    Unauthenticated when the server verified no caller (it was built without
    a verifier): identity metadata on its own is never trusted.
    """
    caller = caller_var.get()
    if caller is None:
        raise Unauthenticated("no verified caller: call this service through the gateway")
    return caller
