"""Build a `grpc.aio` server from servicers, and run it until SIGTERM.

Every server gets the same things: `grpc.health.v1` with a status per
service, server reflection, the shared per-RPC wrapper (spans, request id,
deadline, metrics, access log, error mapping; applied to each handler once
at mount, see `mounting`), message size limits, keepalive policy, and a
Prometheus registry. `run_server` adds the
process-level parts: signal handling and a graceful drain (health turns
NOT_SERVING, in-flight RPCs get `grace_seconds`, then the server stops).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from services.runtime.internal_tokens import CallerVerifier
from services.runtime.logs import AccessLog
from services.runtime.mounting import mount
from services.runtime.reflection import ADD_TO_SERVER as REFLECTION_ADD_TO_SERVER
from services.runtime.reflection import reflection_servicer
from services.runtime.rpc_wrapper import RpcWrapper
from services.runtime.settings import ServerSettings
from services.runtime.telemetry import MetricsEndpoint, RpcMetrics
from services.runtime.tracing import ServerSpans
from services.runtime.watchdog import LoopWatchdog

log = logging.getLogger(__name__)

ServingStatus = health_pb2.HealthCheckResponse.ServingStatus
METADATA_LIMIT_BYTES = 16 * 1024


@dataclasses.dataclass(frozen=True)
class Service:
    """One gRPC service to mount: its implementation and how to add it."""

    servicer: Any
    add_to_server: Callable[[Any, aio.Server], None]
    descriptor: ServiceDescriptor
    #: Hand the servicer request bytes, not messages (it parses after authenticating).
    raw_requests: bool = False

    @property
    def name(self) -> str:
        return self.descriptor.full_name


def server_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    """Channel arguments for a server: size limits, a keepalive policy, and the
    connection age and stream limits when the settings ask for them."""
    return [
        *_connection_limits(settings),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # gRPC's default soft limit (8 KiB) refuses headers between 8 and 16 KiB at
        # random; a fixed 16 KiB lets a large JWT arrive every time, so the gateway's
        # own size cap answers it. Bigger headers still get RESOURCE_EXHAUSTED.
        ("grpc.max_metadata_size", METADATA_LIMIT_BYTES),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def _connection_limits(settings: ServerSettings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = []
    if settings.max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
            (
                "grpc.max_connection_age_grace_ms",
                int(settings.max_connection_age_grace_seconds * 1000),
            ),
        ]
    if settings.max_concurrent_streams > 0:
        options.append(("grpc.max_concurrent_streams", settings.max_concurrent_streams))
    return options


class LatticeServer:
    """A started-on-demand gRPC server with health, reflection and metrics."""

    def __init__(
        self,
        services: Sequence[Service],
        settings: ServerSettings,
        *,
        tracer_provider: TracerProvider | None = None,
        registry: CollectorRegistry | None = None,
        extra_interceptors: Iterable[aio.ServerInterceptor] = (),
        server_credentials: grpc.ServerCredentials | None = None,
        readiness: Callable[[], Awaitable[None]] | None = None,
        verifier: CallerVerifier | None = None,
    ) -> None:
        """`readiness`, if given, is awaited after start; health reports
        NOT_SERVING until it returns (calls are still accepted meanwhile).
        With a `verifier`, every call but health and reflection must carry a
        valid internal token (UNAUTHENTICATED otherwise)."""
        self.settings = settings
        self._readiness = readiness
        self._becoming_ready: asyncio.Task[None] | None = None
        self.services = list(services)
        self.metrics_registry = registry or CollectorRegistry()
        self.health = health.aio.HealthServicer()
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._on_start: list[Callable[[], Awaitable[None]]] = []
        self._access_log = AccessLog(
            settings.access_log, flush_after=settings.access_log_flush_ms / 1000
        )
        wrapper = RpcWrapper(
            RpcMetrics(self.metrics_registry),
            ServerSpans(tracer_provider),
            self._access_log,
            verifier,
        )
        # Interceptors run per call (and make grpc.aio rebuild handlers); the shared
        # behaviour is applied at mount instead. Extra ones are still honoured.
        interceptors = list(extra_interceptors) or None
        self.server = aio.server(interceptors=interceptors, options=server_options(settings))
        for service in self.services:
            mount(
                self.server,
                service.servicer,
                service.add_to_server,
                wrapper,
                raw_requests=service.raw_requests,
            )
        mount(self.server, self.health, health_pb2_grpc.add_HealthServicer_to_server, wrapper)
        if settings.reflection:
            names = [s.name for s in self.services]
            names.append(health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
            servicer = reflection_servicer(names)
            for add_to_server in REFLECTION_ADD_TO_SERVER:
                mount(self.server, servicer, add_to_server, wrapper)
        bind = f"{settings.host}:{settings.port}"
        if server_credentials is None:
            self.port = self.server.add_insecure_port(bind)
        else:
            self.port = self.server.add_secure_port(bind, server_credentials)
        if self.port == 0:
            raise OSError(f"could not bind {settings.host}:{settings.port}")
        self._metrics_endpoint: MetricsEndpoint | None = None

    @property
    def metrics_port(self) -> int | None:
        """The bound Prometheus port, once started (None when metrics are off)."""
        return self._metrics_endpoint.port if self._metrics_endpoint else None

    @property
    def address(self) -> str:
        host = self.settings.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def on_start(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` once the gRPC server has started (a second listener ...)."""
        self._on_start.append(callback)

    def on_stop(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run `callback` after the server has stopped (close stores, clients ...)."""
        self._on_stop.append(callback)

    async def start(self) -> None:
        await self.server.start()
        for callback in self._on_start:
            await callback()
        if self.settings.metrics_port >= 0:
            self._metrics_endpoint = MetricsEndpoint(
                self.metrics_registry,
                self.settings.host,
                self.settings.metrics_port,
                certfile=self.settings.tls_cert_file,
                keyfile=self.settings.tls_key_file,
            )
        names = ", ".join(s.name for s in self.services)
        if self._readiness is None:
            await self.set_serving(True)
            log.info("serving %s on %s", names, self.address)
            return
        await self.set_serving(False)
        log.info("started %s on %s; SERVING once ready", names, self.address)
        self._becoming_ready = asyncio.create_task(self._serve_when_ready(names))

    async def _serve_when_ready(self, names: str) -> None:
        assert self._readiness is not None
        await self._readiness()
        await self.set_serving(True)
        log.info("serving %s on %s", names, self.address)

    async def set_serving(self, serving: bool) -> None:
        """Set the overall health and each service's health at once."""
        status = ServingStatus.SERVING if serving else ServingStatus.NOT_SERVING
        for name in ["", *(s.name for s in self.services)]:
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING first, then let in-flight RPCs finish within grace."""
        grace = self.settings.grace_seconds if grace is None else grace
        if self._becoming_ready is not None:
            self._becoming_ready.cancel()
        await self.set_serving(False)
        await self.server.stop(grace)
        self._access_log.flush()
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.close()
        for callback in reversed(self._on_stop):
            try:
                await callback()
            except Exception:
                log.exception("error while stopping")

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def run_until_signalled(
    build: Callable[[], Awaitable[LatticeServer]],
) -> None:
    """Start the server from `build`, then drain and stop on SIGTERM or SIGINT."""
    server = await build()
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchdog = None
    if server.settings.loop_stall_exit_seconds > 0:
        watchdog = LoopWatchdog(loop, server.settings.loop_stall_exit_seconds)
        watchdog.start()
    await stop.wait()
    log.info("signal received: draining for up to %.1fs", server.settings.grace_seconds)
    await server.stop()
    if watchdog is not None:
        watchdog.stop()
    log.info("stopped")
