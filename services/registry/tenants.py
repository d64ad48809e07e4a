"""Tenant records: validation and who may read or change them.

A tenant record holds the enabled flag and the quotas of one tenant (the
`tenant` claim of its tokens). Records are optional: a tenant without one is
enabled and gets the gateway's default quotas, so a suite works before anyone
creates a record. Only admins create or change records; a tenant may read its
own; anyone else's is NOT_FOUND, like every other object.
"""

from __future__ import annotations

from lattice.errors import InvalidArgument, NotFound, PermissionDenied
from lattice.v1 import registry_pb2
from services.registry import validation as check
from services.runtime.identity import MAX_IDENTITY_CHARS, Caller

#: Longest quota window: quotas are rates, not lifetime budgets.
MAX_WINDOW_SECONDS = 7 * 24 * 3600


def require_admin(caller: Caller, what: str) -> None:
    if not caller.admin:
        raise PermissionDenied(f"only an admin may {what}")


def visible(caller: Caller, record: registry_pb2.Tenant | None, name: str) -> registry_pb2.Tenant:
    if record is None or not caller.may_see(record.name):
        raise NotFound(f"tenant {name!r} not found")
    return record


def tenant_name(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "required")
    if len(value) > MAX_IDENTITY_CHARS or any(ord(ch) < 32 or ch in "/\\" for ch in value):
        raise InvalidArgument(
            field, f"at most {MAX_IDENTITY_CHARS} printable characters, no slashes"
        )
    return value


def _quota(quota: registry_pb2.TenantQuota, field: str) -> None:
    if quota.HasField("window"):
        seconds = quota.window.ToTimedelta().total_seconds()
        if not 1 <= seconds <= MAX_WINDOW_SECONDS:
            raise InvalidArgument(f"{field}.window", f"must be within 1s..{MAX_WINDOW_SECONDS}s")


def tenant(record: registry_pb2.Tenant, field: str = "tenant") -> None:
    """INVALID_ARGUMENT naming the field for anything a record may not hold."""
    tenant_name(record.name, f"{field}.name")
    if record.HasField("quota"):
        _quota(record.quota, f"{field}.quota")
    if len(record.model_quotas) > 1000:
        raise InvalidArgument(f"{field}.model_quotas", "at most 1000 models")
    for model, quota in record.model_quotas.items():
        check.name(model, f"{field}.model_quotas")
        _quota(quota, f"{field}.model_quotas[{model}]")


def stored(record: registry_pb2.Tenant, revision: int, caller: Caller) -> registry_pb2.Tenant:
    """The record as stored: input fields copied, output fields set."""
    result = registry_pb2.Tenant(
        name=record.name,
        enabled=record.enabled,
        model_quotas=record.model_quotas,
        revision=revision,
        updated_by=caller.subject,
    )
    if record.HasField("quota"):
        result.quota.CopyFrom(record.quota)
    result.update_time.GetCurrentTime()
    return result
