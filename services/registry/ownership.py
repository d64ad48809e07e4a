"""Who owns a registry object and who may see it.

Every model carries its owning tenant; its versions, aliases, deployment,
policy and history entries carry the same tenant, so any object (and any
Watch event) answers "whose is this?" on its own. A caller sees an object
only if `Caller.may_see` its tenant (its own tenant, or any tenant as admin);
everything else behaves as if it did not exist.
"""

from __future__ import annotations

from lattice.v1 import registry_pb2
from services.runtime.identity import Caller
from services.runtime.registry_view import RegistryState


def event_visible(caller: Caller, event: registry_pb2.WatchResponse) -> bool:
    """RESET and SYNCED go to everyone; object events only to callers who may see them."""
    kind = event.WhichOneof("object")
    if kind is None:
        return True
    if kind == "tenant":  # a tenant's own record is visible to it
        return caller.may_see(event.tenant.name)
    return caller.may_see(getattr(event, kind).tenant)


def owner_for_create(caller: Caller, requested: str) -> str:
    """The tenant a new model belongs to: the caller's, or any tenant an admin names."""
    if caller.admin and requested:
        return requested
    return caller.tenant


def references_artifact(state: RegistryState, caller: Caller, digest: str) -> bool:
    """Whether a version the caller may see points at these bytes."""
    for name, versions in state.versions.items():
        model = state.models.get(name)
        if model is None or not caller.may_see(model.tenant):
            continue
        if any(version.artifact_digest == digest for version in versions.values()):
            return True
    return False
