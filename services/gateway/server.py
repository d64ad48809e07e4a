"""Wires the gateway: it serves the same lattice.v1 services it fronts."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from lattice.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)
from services.gateway.auth import AuthConfig, Authenticator, JwksKeys, file_fetcher, url_fetcher
from services.gateway.gateway import Gateway
from services.gateway.http.app import build_app
from services.gateway.http.listener import HttpListener
from services.gateway.http.openai_api import HttpLimits
from services.gateway.metrics import GatewayMetrics
from services.gateway.quotas import QuotaLimiter, QuotaLimits, TenantRecords, connect
from services.gateway.replica_states import ReplicaStates
from services.gateway.routing import Router
from services.gateway.servicers import InferenceServicer, forwarding_servicer
from services.gateway.upstreams import OutlierConfig, ReplicaPool, Upstream
from services.runtime import LatticeServer, ServerSettings, Service, create_channel
from services.runtime.entrypoint import run_service
from services.runtime.identity import service_caller
from services.runtime.logs import AccessLog
from services.runtime.registry_view import RegistryView
from services.runtime.security import service_security
from services.runtime.tls import channel_credentials, server_credentials

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class GatewaySettings(ServerSettings):
    port: int = 50051
    registry_address: str = "127.0.0.1:50052"
    inference_addresses: tuple[str, ...] = ("127.0.0.1:50053",)
    trainer_address: str = "127.0.0.1:50054"
    #: HS256 secret for development tokens (`lattice token`); empty = HMAC tokens refused.
    dev_jwt_secret: str = ""
    #: RS256/ES256 public keys: a JWKS file, or a JWKS URL.
    jwks_file: str = ""
    jwks_url: str = ""
    #: Cached JWKS keys live this long (refreshed at half of it; kept while the source is down).
    jwks_cache_seconds: float = 300.0
    #: At most one JWKS refetch per this many seconds (unknown kids, failures).
    jwks_refetch_seconds: float = 30.0
    jwt_issuer: str = "lattice"
    jwt_audience: str = "lattice"
    jwt_algorithms: tuple[str, ...] = ("HS256", "RS256", "ES256")
    jwt_leeway_seconds: float = 30.0
    jwt_max_bytes: int = 8192
    jwt_tenant_claim: str = "tenant"
    #: Verified tokens remembered per replica (0 = verify every request).
    jwt_cache_size: int = 10_000
    #: Redis shared by all gateway replicas for quotas (redis://, redis+sentinel:// or
    #: redis+cluster://, see deploy/README.md); empty = per-replica limits only.
    redis_url: str = ""
    #: Default requests per tenant per quota window, for tenants whose registry record
    #: sets no quota (`lattice tenants set-quota`); 0 = unlimited.
    quota_requests: int = 0
    #: Default tokens (prompt + completion) per tenant per quota window; 0 = unlimited.
    quota_tokens: int = 0
    #: Length of the sliding quota window, unless a tenant's record sets its own.
    quota_window_seconds: float = 60.0
    #: Count the default quotas per (tenant, model) instead of per tenant.
    quota_per_model: bool = False
    #: Redis down: true = per-replica limits and a warning, false = UNAVAILABLE.
    quota_fail_open: bool = True
    #: Replicas a unary inference call may try (UNAVAILABLE -> next replica).
    upstream_max_attempts: int = 3
    #: Consecutive UNAVAILABLEs that eject a replica, and the first ejection's length.
    outlier_consecutive_failures: int = 3
    outlier_ejection_seconds: float = 5.0
    #: Deadline for a unary inference call when the caller sets none.
    inference_timeout_seconds: float = 120.0
    #: Kept back from the caller's deadline when calling inference (at most 5% of it).
    upstream_deadline_margin_seconds: float = 0.1
    #: How often the gateway asks each inference replica which versions it has READY
    #: (weighted routing leaves out versions none has); 0 turns it off.
    replica_poll_seconds: float = 1.0
    #: A replica that leaves two polls in a row unanswered within this is out of
    #: rotation (hung or stopped) until it answers again.
    replica_poll_timeout_seconds: float = 2.0
    #: How long start-up waits for the registry view before serving anyway.
    registry_sync_timeout: float = 5.0
    #: TLS to upstreams (CA to trust; cert + key make it mutual TLS).
    upstream_ca_file: str = ""
    upstream_cert_file: str = ""
    upstream_key_file: str = ""
    #: Largest request message accepted at the gateway's edge, in bytes (a larger one
    #: is refused with INVALID_ARGUMENT before it is parsed or forwarded).
    max_request_bytes: int = 2 * 1024 * 1024
    #: Server streams one tenant may hold open on this gateway at once, gRPC and HTTP
    #: together (0 = no cap).
    max_streams_per_tenant: int = 2000
    #: A forwarded registry/trainer stream (Watch, WatchJob, DownloadArtifact) that
    #: carries nothing this long is ended with UNAVAILABLE (reconnect and resume).
    stream_idle_timeout_seconds: float = 300.0
    #: Connections are closed after this long (clients reconnect and rebalance
    #: across gateway replicas), giving in-flight calls the grace period.
    max_connection_age_seconds: float = 600.0
    max_connection_age_grace_seconds: float = 60.0
    #: Concurrent streams (calls) on one client connection.
    max_concurrent_streams: int = 1000
    #: HTTP front (OpenAI-compatible /v1, /healthz) on this port; 0 picks a free one,
    #: -1 turns it off. Same TLS settings as the gRPC port.
    http_port: int = -1
    #: Largest HTTP request body, in bytes (413 above it).
    http_max_body_bytes: int = 4 * 1024 * 1024
    #: An HTTP event stream that produces nothing for this long is ended.
    http_sse_idle_seconds: float = 120.0
    #: ASGI server of the HTTP front: uvicorn (HTTP/1.1), hypercorn (HTTP/2 and
    #: HTTP/1.1: h2 over TLS, h2c in cleartext), or auto (hypercorn with TLS, else uvicorn).
    http_server: str = "auto"


def _authenticator(settings: GatewaySettings) -> Authenticator:
    keys = None
    if settings.jwks_file or settings.jwks_url:
        fetch = (
            file_fetcher(settings.jwks_file)
            if settings.jwks_file
            else url_fetcher(settings.jwks_url)
        )
        keys = JwksKeys(
            fetch,
            lifetime=settings.jwks_cache_seconds,
            refetch_interval=settings.jwks_refetch_seconds,
        )
    config = AuthConfig(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        algorithms=settings.jwt_algorithms,
        hmac_secret=settings.dev_jwt_secret,
        leeway_seconds=settings.jwt_leeway_seconds,
        max_token_bytes=settings.jwt_max_bytes,
        tenant_claim=settings.jwt_tenant_claim,
        cache_size=settings.jwt_cache_size,
    )
    if not settings.dev_jwt_secret and keys is None:
        log.warning("no dev_jwt_secret and no JWKS configured: every request will be refused")
    return Authenticator(config, keys)


def _quotas(settings: GatewaySettings, records: TenantRecords) -> QuotaLimiter:
    limits = QuotaLimits(
        requests=settings.quota_requests,
        tokens=settings.quota_tokens,
        window_seconds=settings.quota_window_seconds,
        per_model=settings.quota_per_model,
    )
    # Connected even with no default quota: tenant records may set one at run time.
    client = connect(settings.redis_url) if settings.redis_url else None
    if limits.enabled and client is None:
        log.warning("quotas without redis_url are per replica, not fleet-wide")
    return QuotaLimiter(client, limits, fail_open=settings.quota_fail_open, records=records)


async def build_server(
    settings: GatewaySettings, *, tracer_provider: TracerProvider | None = None
) -> LatticeServer:
    tls = server_credentials(
        settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file
    )
    metrics_registry = CollectorRegistry()
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("lattice.gateway")
    security = service_security(settings, "gateway")
    upstream_tls = (
        channel_credentials(
            settings.upstream_ca_file, settings.upstream_cert_file, settings.upstream_key_file
        )
        or security.client_credentials
    )
    registry_channel = create_channel(
        settings.registry_address,
        credentials=upstream_tls,
        minter=security.minter("registry"),
        tracer_provider=tracer_provider,
    )
    view = RegistryView(
        settings.registry_address,
        tracer_provider=tracer_provider,
        channel=registry_channel,
        caller=service_caller("gateway"),
    )
    pool = ReplicaPool(
        settings.inference_addresses,
        inference_pb2_grpc.InferenceServiceStub,
        credentials=upstream_tls,
        minter=security.minter("inference"),
        outlier=OutlierConfig(
            consecutive_failures=settings.outlier_consecutive_failures,
            base_ejection_seconds=settings.outlier_ejection_seconds,
        ),
        max_attempts=settings.upstream_max_attempts,
        deadline_margin=settings.upstream_deadline_margin_seconds,
        default_timeout=settings.inference_timeout_seconds,
        tracer=tracer,
    )
    states = ReplicaStates(
        pool,
        interval=settings.replica_poll_seconds,
        timeout=settings.replica_poll_timeout_seconds,
    )
    router = Router(view, ready=lambda: view.synced, ready_versions=states.ready_versions)
    upstreams = {
        "registry": Upstream(
            settings.registry_address,
            registry_pb2_grpc.ModelRegistryServiceStub,
            credentials=upstream_tls,
            minter=security.minter("registry"),
            tracer_provider=tracer_provider,
        ),
        "trainer": Upstream(
            settings.trainer_address,
            trainer_pb2_grpc.TrainerServiceStub,
            credentials=upstream_tls,
            minter=security.minter("trainer"),
            tracer_provider=tracer_provider,
        ),
    }
    gateway = Gateway(
        authenticator=_authenticator(settings),
        router=router,
        quotas=_quotas(settings, view.tenant),
        inference=pool,
        upstreams=upstreams,
        metrics=GatewayMetrics(metrics_registry),
        tracer=tracer,
        max_request_bytes=settings.max_request_bytes,
        max_streams_per_tenant=settings.max_streams_per_tenant,
        stream_idle_seconds=settings.stream_idle_timeout_seconds,
        tenant_records=view.tenant,
    )
    registry_service = registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"]
    trainer_service = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"]
    services = [
        Service(
            InferenceServicer(gateway),
            inference_pb2_grpc.add_InferenceServiceServicer_to_server,
            inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
            raw_requests=True,
        ),
        Service(
            forwarding_servicer(
                registry_pb2_grpc.ModelRegistryServiceServicer,
                registry_service,
                "registry",
                gateway,
            ),
            registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
            registry_service,
            raw_requests=True,
        ),
        Service(
            forwarding_servicer(
                trainer_pb2_grpc.TrainerServiceServicer, trainer_service, "trainer", gateway
            ),
            trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
            trainer_service,
            raw_requests=True,
        ),
    ]
    server = LatticeServer(
        services,
        settings,
        tracer_provider=tracer_provider,
        registry=metrics_registry,
        server_credentials=tls,
    )
    await view.start()
    try:
        await view.wait_synced(settings.registry_sync_timeout)
    except TimeoutError:
        log.warning(
            "registry %s not synced after %.1fs; serving, routing once it answers",
            settings.registry_address,
            settings.registry_sync_timeout,
        )
    if settings.http_port >= 0:
        _add_http(server, settings, gateway, services, view, tracer_provider)
    server.on_stop(registry_channel.close)
    server.on_stop(view.stop)
    server.on_stop(gateway.close)
    states.start()
    server.on_stop(states.stop)  # callbacks run last-first: polling stops before the pool

    server.gateway = gateway  # type: ignore[attr-defined]  # for tests and benchmarks
    return server


def _add_http(
    server: LatticeServer,
    settings: GatewaySettings,
    gateway: Gateway,
    services: list[Service],
    view: RegistryView,
    tracer_provider: TracerProvider | None,
) -> None:
    """The HTTP front beside the gRPC port: started and stopped with it."""
    limits = HttpLimits(
        max_body_bytes=settings.http_max_body_bytes,
        sse_idle_seconds=settings.http_sse_idle_seconds,
    )
    access_log = AccessLog(settings.access_log, flush_after=settings.access_log_flush_ms / 1000)
    app = build_app(
        gateway,
        services,
        limits,
        ready=lambda: view.synced,
        tracer_provider=tracer_provider,
        access_log=access_log,
    )
    listener = HttpListener(
        app,
        settings.host,
        settings.http_port,
        cert_file=settings.tls_cert_file,
        key_file=settings.tls_key_file,
        client_ca_file=settings.tls_client_ca_file,
        grace_seconds=settings.grace_seconds,
        server=settings.http_server,
    )

    async def stop() -> None:
        await listener.stop()
        access_log.flush()

    server.on_start(listener.start)
    server.on_stop(stop)
    server.http = listener  # type: ignore[attr-defined]  # for tests and benchmarks


def main(argv: Sequence[str] | None = None) -> None:
    run_service("gateway", GatewaySettings, build_server, argv)
