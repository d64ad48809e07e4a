"""Authorisation: which scope each RPC needs, and the model tenant allowlist.

Every method the gateway serves is in `METHOD_SCOPES`; a method missing
from the table is refused (deny by default). `admin` implies every scope.
"""

from __future__ import annotations

from lattice.errors import PermissionDenied
from lattice.v1 import registry_pb2
from services.gateway.auth import Principal

INVOKE = "inference:invoke"
REGISTRY_READ = "registry:read"
REGISTRY_WRITE = "registry:write"
TRAINER_SUBMIT = "trainer:submit"
TRAINER_READ = "trainer:read"
ADMIN = "admin"

_INFERENCE = "/lattice.v1.InferenceService/"
_REGISTRY = "/lattice.v1.ModelRegistryService/"
_TRAINER = "/lattice.v1.TrainerService/"

METHOD_SCOPES: dict[str, str] = {
    _INFERENCE + "Generate": INVOKE,
    _INFERENCE + "GenerateStream": INVOKE,
    _INFERENCE + "Embed": INVOKE,
    _INFERENCE + "SimilarWords": INVOKE,
    _INFERENCE + "Classify": INVOKE,
    _INFERENCE + "ListLoadedModels": ADMIN,
    _REGISTRY + "CreateModel": REGISTRY_WRITE,
    _REGISTRY + "GetModel": REGISTRY_READ,
    _REGISTRY + "ListModels": REGISTRY_READ,
    _REGISTRY + "DeleteModel": REGISTRY_WRITE,
    _REGISTRY + "CreateVersion": REGISTRY_WRITE,
    _REGISTRY + "GetVersion": REGISTRY_READ,
    _REGISTRY + "ListVersions": REGISTRY_READ,
    _REGISTRY + "UpdateVersionStatus": REGISTRY_WRITE,
    _REGISTRY + "UploadArtifact": REGISTRY_WRITE,
    _REGISTRY + "DownloadArtifact": REGISTRY_READ,
    _REGISTRY + "SetAlias": REGISTRY_WRITE,
    _REGISTRY + "DeleteAlias": REGISTRY_WRITE,
    _REGISTRY + "ListAliases": REGISTRY_READ,
    _REGISTRY + "ResolveModel": REGISTRY_READ,
    _REGISTRY + "GetDeployment": REGISTRY_READ,
    _REGISTRY + "ListDeployments": REGISTRY_READ,
    _REGISTRY + "UpdateDeployment": REGISTRY_WRITE,
    _REGISTRY + "ListDeploymentHistory": REGISTRY_READ,
    # Load reports come from inference replicas (suite services), never tenants.
    _REGISTRY + "ReportVersionLoad": ADMIN,
    _REGISTRY + "GetPolicy": REGISTRY_READ,
    # Policy decides who may use a model: only administrators change it.
    _REGISTRY + "SetPolicy": ADMIN,
    _REGISTRY + "Watch": REGISTRY_READ,
    # Tenant records: a tenant may read its own; only administrators write them.
    _REGISTRY + "CreateTenant": ADMIN,
    _REGISTRY + "GetTenant": REGISTRY_READ,
    _REGISTRY + "ListTenants": REGISTRY_READ,
    _REGISTRY + "UpdateTenant": ADMIN,
    _TRAINER + "PrepareDataset": TRAINER_SUBMIT,
    _TRAINER + "GetDataset": TRAINER_READ,
    _TRAINER + "ListDatasets": TRAINER_READ,
    _TRAINER + "SubmitJob": TRAINER_SUBMIT,
    _TRAINER + "GetJob": TRAINER_READ,
    _TRAINER + "ListJobs": TRAINER_READ,
    _TRAINER + "CancelJob": TRAINER_SUBMIT,
    _TRAINER + "WatchJob": TRAINER_READ,
    _TRAINER + "UploadSources": TRAINER_SUBMIT,
}


class AuthzFailure(PermissionDenied):
    """PERMISSION_DENIED with a short machine label (`reason`) for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def require_scope(principal: Principal, method: str) -> None:
    """PERMISSION_DENIED unless the principal holds the method's scope (or admin)."""
    scope = METHOD_SCOPES.get(method)
    if scope is None:
        raise AuthzFailure("unknown_method", f"{method} is not exposed by the gateway")
    if scope not in principal.scopes and ADMIN not in principal.scopes:
        raise AuthzFailure("scope", f"missing scope {scope!r} for {method.rsplit('/', 1)[-1]}")


def tenant_allowed(principal: Principal, policy: registry_pb2.ModelPolicy | None) -> bool:
    """True unless the model's policy allows only other tenants."""
    return (
        policy is None or not policy.allowed_tenants or principal.tenant in policy.allowed_tenants
    )


def require_enabled(principal: Principal, record: registry_pb2.Tenant | None) -> None:
    """PERMISSION_DENIED for every token of a tenant an admin disabled (no record = enabled)."""
    if record is not None and not record.enabled:
        raise AuthzFailure(
            "tenant_disabled", f"tenant {principal.tenant!r} is disabled; ask an administrator"
        )


def require_tenant(
    principal: Principal, model: str, policy: registry_pb2.ModelPolicy | None
) -> None:
    """PERMISSION_DENIED when the model's policy allows only other tenants."""
    if not tenant_allowed(principal, policy):
        raise AuthzFailure("tenant", f"tenant {principal.tenant!r} may not use model {model!r}")
