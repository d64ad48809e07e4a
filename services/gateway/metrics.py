"""Gateway metrics, registered in the server's own Prometheus registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.runtime.telemetry import LabelledChildren


class GatewayMetrics:
    """Requests by tenant/model/code, rejections by reason, quota use, upstream health."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "lattice_gateway_requests",
            "Requests through the gateway, by tenant, model and status code.",
            ["tenant", "model", "code"],
            registry=registry,
        )
        self.rejections = Counter(
            "lattice_gateway_rejections",
            "Requests refused by the gateway itself, by stage and reason.",
            ["stage", "reason"],
            registry=registry,
        )
        self.quota_used = Gauge(
            "lattice_gateway_quota_used",
            "Quota used in the current window at the last admission, by subject and kind.",
            ["subject", "kind"],
            registry=registry,
        )
        self.tokens = Counter(
            "lattice_gateway_tokens",
            "Tokens charged to tenants (prompt + completion), by tenant and model.",
            ["tenant", "model"],
            registry=registry,
        )
        self.upstream_healthy = Gauge(
            "lattice_gateway_upstream_healthy",
            "1 while an inference replica is in rotation, 0 while ejected.",
            ["address"],
            registry=registry,
        )
        self.routes = Counter(
            "lattice_gateway_route_decisions",
            "Routing decisions, by model, chosen version and why.",
            ["model", "version", "reason"],
            registry=registry,
        )
        self.shadow = Counter(
            "lattice_gateway_shadow_requests",
            "Shadow copies, by outcome (sent, failed, dropped).",
            ["outcome"],
            registry=registry,
        )
        self.auth_seconds = Histogram(
            "lattice_gateway_auth_seconds",
            "Time to authenticate a request.",
            registry=registry,
            buckets=(0.00002, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1),
        )
        #: Hot-path accessors: `self.requests_for(tenant, model, code).inc()` etc.
        self.requests_for = LabelledChildren(self.requests)
        self.routes_for = LabelledChildren(self.routes)
        self.tokens_for = LabelledChildren(self.tokens)
        self.quota_used_for = LabelledChildren(self.quota_used)
