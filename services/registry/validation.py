"""Input checks for registry requests: each failure names the field to fix.

Plain functions over protos, so the rules are testable without gRPC and the
servicer stays a converter. Cross-object rules (does the version exist, is
it READY) live in the `Registry`; these only look at the request itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping

from google.protobuf import duration_pb2

from lattice.errors import InvalidArgument
from lattice.refs import NAME_PATTERN
from lattice.v1 import common_pb2, registry_pb2

DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")
URI_PATTERN = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
MAX_DESCRIPTION = 1024
MAX_URI = 2048
MAX_MAP_ENTRIES = 256
MAX_KEY = 128
MAX_LABEL_VALUE = 256
MAX_PARAM_VALUE = 4096
MAX_ROUTES = 32
MAX_TENANTS = 1000
MAX_TOKENS_CEILING = 10_000_000
MAX_ROLLOUT_INTERVAL_SECONDS = 30 * 24 * 3600
MAX_REASON = 1024
#: A replica is named host:port; a DNS name is at most 253 characters.
MAX_REPLICA = 260
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def name(value: str, field: str) -> str:
    """A model name: a lower-case DNS label."""
    if not value:
        raise InvalidArgument(field, "required")
    if not NAME_PATTERN.match(value):
        raise InvalidArgument(
            field, f"{value[:80]!r} is not a lower-case DNS label ([a-z0-9-], 1-63 chars)"
        )
    return value


def alias_name(value: str, field: str) -> str:
    name(value, field)
    if value.isdigit():
        raise InvalidArgument(field, "an alias may not be all digits (it would read as a version)")
    return value


def version_number(value: int, field: str) -> int:
    if value < 1:
        raise InvalidArgument(field, f"must be a version number >= 1, got {value}")
    return value


def expected_revision(value: int, field: str = "expected_revision") -> int:
    if value < 0:
        raise InvalidArgument(field, f"must be >= 0 (0 = unconditional), got {value}")
    return value


def text(value: str, field: str, limit: int = MAX_DESCRIPTION) -> str:
    if len(value) > limit:
        raise InvalidArgument(field, f"longer than {limit} characters")
    return value


def enum_value(value: int, enum, field: str) -> int:
    if value == 0:
        raise InvalidArgument(field, "required")
    if value not in enum.values():
        raise InvalidArgument(field, f"unknown value {value}")
    return value


def string_map(
    values: Mapping[str, str], field: str, *, value_limit: int, dns_keys: bool = False
) -> None:
    if len(values) > MAX_MAP_ENTRIES:
        raise InvalidArgument(field, f"more than {MAX_MAP_ENTRIES} entries")
    for key, value in values.items():
        if dns_keys and not NAME_PATTERN.match(key):
            raise InvalidArgument(f"{field}[{key[:40]!r}]", "key is not a lower-case DNS label")
        if not key or len(key) > MAX_KEY:
            raise InvalidArgument(f"{field}[{key[:40]!r}]", f"key must be 1-{MAX_KEY} characters")
        if len(value) > value_limit:
            raise InvalidArgument(f"{field}[{key[:40]!r}]", f"value longer than {value_limit}")


def model(value: registry_pb2.Model, field: str = "model") -> None:
    name(value.name, f"{field}.name")
    enum_value(value.task, common_pb2.ModelTask, f"{field}.task")
    text(value.description, f"{field}.description")
    string_map(value.labels, f"{field}.labels", value_limit=MAX_LABEL_VALUE, dns_keys=True)


def create_version(request: registry_pb2.CreateVersionRequest) -> None:
    name(request.model_name, "model_name")
    enum_value(request.format, common_pb2.ArtifactFormat, "format")
    if not request.artifact_uri:
        raise InvalidArgument("artifact_uri", "required")
    if len(request.artifact_uri) > MAX_URI or not URI_PATTERN.match(request.artifact_uri):
        raise InvalidArgument(
            "artifact_uri",
            "must be a URI such as lattice-artifact://sha256/"
            f"<digest> or triton://host:port/model (at most {MAX_URI} chars)",
        )
    triton_served = (
        request.format == common_pb2.ARTIFACT_FORMAT_TRITON
        and request.artifact_uri.startswith("triton://")
    )
    if request.artifact_digest or not triton_served:
        digest(request.artifact_digest, "artifact_digest")
    lineage = request.lineage
    text(lineage.training_job_id, "lineage.training_job_id", 256)
    if lineage.dataset_digest:
        digest(lineage.dataset_digest, "lineage.dataset_digest")
    if lineage.base_version < 0:
        raise InvalidArgument("lineage.base_version", "must be >= 0 (0 = none)")
    if lineage.base_model_name:
        name(lineage.base_model_name, "lineage.base_model_name")
        if not lineage.base_version:
            raise InvalidArgument("lineage.base_version", "required with base_model_name")
    if len(request.metrics) > MAX_MAP_ENTRIES:
        raise InvalidArgument("metrics", f"more than {MAX_MAP_ENTRIES} entries")
    for key, number in request.metrics.items():
        if not key or len(key) > MAX_KEY:
            raise InvalidArgument(f"metrics[{key[:40]!r}]", f"key must be 1-{MAX_KEY} characters")
        if not math.isfinite(number):
            raise InvalidArgument(f"metrics[{key[:40]!r}]", "must be a finite number")
    string_map(request.params, "params", value_limit=MAX_PARAM_VALUE)
    string_map(request.tags, "tags", value_limit=MAX_LABEL_VALUE)
    text(request.description, "description")


def digest(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "required: a sha256 digest as 64 lower-case hex characters")
    if not DIGEST_PATTERN.match(value):
        raise InvalidArgument(field, "must be a sha256 digest as 64 lower-case hex characters")
    return value


def routes(request: registry_pb2.UpdateDeploymentRequest) -> None:
    if len(request.routes) > MAX_ROUTES:
        raise InvalidArgument("routes", f"at most {MAX_ROUTES} routes")
    seen: set[int] = set()
    for index, route in enumerate(request.routes):
        version_number(route.version, f"routes[{index}].version")
        if route.version in seen:
            raise InvalidArgument(
                f"routes[{index}].version", f"version {route.version} appears twice"
            )
        seen.add(route.version)
        if route.weight > 100:
            raise InvalidArgument(f"routes[{index}].weight", "must be 0..100")
    total = sum(route.weight for route in request.routes)
    if request.routes and total != 100:
        raise InvalidArgument("routes", f"weights must sum to 100, they sum to {total}")
    if request.shadow_version < 0:
        raise InvalidArgument("shadow_version", "must be >= 0 (0 = none)")
    if request.shadow_version:
        if not request.routes:
            raise InvalidArgument("shadow_version", "a shadow needs routes to copy traffic from")
        if request.shadow_version in seen:
            raise InvalidArgument("shadow_version", "the shadow version may not also be routed")
    expected_revision(request.expected_revision)
    text(request.reason, "reason", MAX_REASON)


def load_report(request: registry_pb2.ReportVersionLoadRequest) -> None:
    name(request.model_name, "model_name")
    version_number(request.version, "version")
    text(request.reason, "reason", MAX_REASON)
    text(request.replica, "replica", MAX_REPLICA)
    if not request.loaded and not request.reason.strip():
        raise InvalidArgument("reason", "a failed load needs a reason")


def policy(value: registry_pb2.ModelPolicy, field: str = "policy") -> None:
    name(value.model_name, f"{field}.model_name")
    if len(value.allowed_tenants) > MAX_TENANTS:
        raise InvalidArgument(f"{field}.allowed_tenants", f"more than {MAX_TENANTS} tenants")
    for index, tenant in enumerate(value.allowed_tenants):
        if not TENANT_PATTERN.match(tenant):
            raise InvalidArgument(
                f"{field}.allowed_tenants[{index}]", "must be 1-128 characters of [A-Za-z0-9._:@/-]"
            )
    for ceiling in ("max_new_tokens", "max_prompt_tokens"):
        if getattr(value, ceiling) > MAX_TOKENS_CEILING:
            raise InvalidArgument(f"{field}.{ceiling}", f"at most {MAX_TOKENS_CEILING}")
    if value.HasField("min_rollout_interval"):
        duration(value.min_rollout_interval, f"{field}.min_rollout_interval")


def duration(value: duration_pb2.Duration, field: str) -> float:
    if value.seconds < 0 or value.nanos < 0 or value.nanos > 999_999_999:
        raise InvalidArgument(field, "must be a non-negative duration")
    if value.seconds > MAX_ROLLOUT_INTERVAL_SECONDS:
        raise InvalidArgument(field, f"at most {MAX_ROLLOUT_INTERVAL_SECONDS} seconds")
    return value.seconds + value.nanos / 1e9


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0:
        raise InvalidArgument(field, "must be >= 0")
    if value > MAX_PAGE_SIZE:
        raise InvalidArgument(field, f"at most {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def encode_page_token(kind: str, after: str | int) -> str:
    """An opaque token: which listing it belongs to and the last key returned."""
    raw = json.dumps({"k": kind, "a": after}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, kind: str, field: str = "page_token") -> str | int | None:
    """The last key of the previous page, or None for the first page."""
    if not token:
        return None
    if len(token) > 512:
        raise InvalidArgument(field, "not a token this listing returned")
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = data["a"]
        valid = data["k"] == kind and isinstance(after, str | int) and not isinstance(after, bool)
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        valid = False
    if not valid:
        raise InvalidArgument(field, "not a token this listing returned")
    return after
