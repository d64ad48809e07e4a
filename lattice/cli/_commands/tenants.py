"""`lattice tenants`: tenant records (enabled flag, quotas), kept in the registry.

Writing needs an admin token (`lattice token --admin`); every gateway replica
applies a change within moments, through its registry Watch, without a restart.
"""

from __future__ import annotations

from typing import Any

import click

from lattice import _requests
from lattice.cli._common import Session, lattice_command, print_fields, print_table, when
from lattice.v1 import registry_pb2


def _limit(quota: registry_pb2.TenantQuota, has: bool) -> str:
    if not has:
        return "default"
    window = f"{quota.window.ToTimedelta().total_seconds():g}s" if quota.HasField("window") else ""
    parts = [
        f"{quota.requests or 'unlimited'} requests",
        f"{quota.tokens or 'unlimited'} tokens",
    ]
    return " / ".join(parts) + (f" per {window}" if window else " per window")


def _describe(tenant: registry_pb2.Tenant) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = [
        ("name", tenant.name),
        ("enabled", "yes" if tenant.enabled else "NO (its tokens are refused)"),
        ("quota", _limit(tenant.quota, tenant.HasField("quota"))),
    ]
    for model in sorted(tenant.model_quotas):
        pairs.append((f"quota[{model}]", _limit(tenant.model_quotas[model], True)))
    pairs += [
        ("revision", tenant.revision),
        ("updated", f"{when(tenant.update_time)} by {tenant.updated_by}"),
    ]
    return pairs


def _show(session: Session, tenant: registry_pb2.Tenant) -> None:
    session.emit(tenant, lambda: print_fields(_describe(tenant)))


@click.group()
def tenants() -> None:
    """Tenant records: enabled flag and quotas (writing needs an admin token)."""


@tenants.command("list")
@lattice_command
def list_tenants(session: Session) -> None:
    """List tenant records (only your own unless you are an admin)."""
    found = session.client().list_tenants()
    session.emit(
        found,
        lambda: print_table(
            ["name", "enabled", "quota", "models", "updated"],
            [
                (
                    t.name,
                    "yes" if t.enabled else "no",
                    _limit(t.quota, t.HasField("quota")),
                    ", ".join(sorted(t.model_quotas)) or "-",
                    when(t.update_time),
                )
                for t in found
            ],
        ),
    )


@tenants.command("create")
@click.argument("name")
@click.option("--disabled", is_flag=True, help="Create it disabled (its tokens are refused).")
@lattice_command
def create_tenant(session: Session, name: str, disabled: bool) -> None:
    """Create a tenant record (default quotas until `set-quota`)."""
    _show(session, session.client().create_tenant(name, enabled=not disabled))


@tenants.command("set-quota")
@click.argument("name")
@click.option(
    "--requests", type=click.IntRange(min=0), default=0, help="Per window; 0 = unlimited."
)
@click.option("--tokens", type=click.IntRange(min=0), default=0, help="Per window; 0 = unlimited.")
@click.option(
    "--window", type=click.FloatRange(min=1), default=None, help="Seconds (default: the gateway's)."
)
@click.option("--model", default="", help="Set the quota of this model only.")
@click.option("--clear", is_flag=True, help="Remove the quota (back to the gateway's default).")
@lattice_command
def set_quota(
    session: Session,
    name: str,
    requests: int,
    tokens: int,
    window: float | None,
    model: str,
    clear: bool,
) -> None:
    """Set a tenant's request and token quota (or one model's), at run time."""
    client = session.client()
    tenant = client.get_tenant(name)
    quota = _requests.tenant_quota(requests, tokens, window)
    if model:
        if clear:
            tenant.model_quotas.pop(model, None)
        else:
            tenant.model_quotas[model].CopyFrom(quota)
    elif clear:
        tenant.ClearField("quota")
    else:
        tenant.quota.CopyFrom(quota)
    _show(session, client.update_tenant(tenant, expected_revision=tenant.revision))


def _set_enabled(session: Session, name: str, enabled: bool) -> None:
    client = session.client()
    tenant = client.get_tenant(name)
    tenant.enabled = enabled
    _show(session, client.update_tenant(tenant, expected_revision=tenant.revision))


@tenants.command("disable")
@click.argument("name")
@lattice_command
def disable_tenant(session: Session, name: str) -> None:
    """Refuse every token of the tenant at once (PERMISSION_DENIED)."""
    _set_enabled(session, name, False)


@tenants.command("enable")
@click.argument("name")
@lattice_command
def enable_tenant(session: Session, name: str) -> None:
    """Let the tenant's tokens in again."""
    _set_enabled(session, name, True)
