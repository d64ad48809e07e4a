"""Wires the registry service: settings, database, artifact store, servicer, server."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from lattice.v1 import registry_pb2, registry_pb2_grpc
from services.registry.artifacts import ArtifactStore
from services.registry.metrics import RegistryMetrics
from services.registry.registry import Registry
from services.registry.servicer import RegistryServicer
from services.registry.store import Database, SqliteStore
from services.registry.uploads import Artifacts
from services.runtime import LatticeServer, ServerSettings, Service
from services.runtime.at_rest import AtRest
from services.runtime.entrypoint import run_service
from services.runtime.remote_targets import RemoteAllowlist
from services.runtime.security import service_security
from services.runtime.signatures import ArtifactSignatures


@dataclasses.dataclass(frozen=True)
class RegistrySettings(ServerSettings):
    port: int = 50052
    #: How many recent revisions Watch can replay; older resumes get a snapshot.
    watch_retain_revisions: int = 10_000
    #: Events buffered per Watch subscriber before it is reset to a snapshot.
    watch_queue_size: int = 1024
    #: Largest artifact UploadArtifact accepts, in bytes.
    max_artifact_bytes: int = 64 * 1024**3
    #: SQLite `synchronous` level: FULL survives power loss, NORMAL only crashes.
    sqlite_synchronous: str = "FULL"
    #: host:port patterns a version's remote backend (triton://host:port/..., a
    #: triton_address param) may name, e.g. "*.gpu.internal:8001"; empty = none.
    remote_allowlist: tuple[str, ...] = ()
    #: Store new artifacts encrypted (AES-GCM, key ring); existing ones stay readable
    #: either way. Off by default: the volume's own encryption may be enough.
    encrypt_artifacts_at_rest: bool = False
    #: Owner given to models (and everything under them) stored before objects had owners.
    default_tenant: str = "default"


class RegistryServer(LatticeServer):
    """A LatticeServer that ends Watch streams when it starts draining.

    Watch streams never finish on their own, so without this every drain
    would wait out its whole grace period; ended cleanly, subscribers
    reconnect (to another replica, or to this one once it is back).
    """

    def __init__(self, *args, registry_domain: Registry, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.registry = registry_domain

    async def set_serving(self, serving: bool) -> None:
        await super().set_serving(serving)
        if serving:
            self.registry.hub.reopen()
        else:
            self.registry.hub.close()


async def build_server(
    settings: RegistrySettings, *, tracer_provider: TracerProvider | None = None
) -> LatticeServer:
    root = settings.data_dir / "registry"
    security = service_security(settings, "registry")
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("lattice.registry")
    metrics_registry = CollectorRegistry()
    metrics = RegistryMetrics(metrics_registry)
    database = Database(
        lambda: SqliteStore(
            root / "registry.db",
            synchronous=settings.sqlite_synchronous,
            default_tenant=settings.default_tenant,
        ),
        tracer=tracer,
        duration=metrics.db_duration,
    )
    store = ArtifactStore(
        root / "artifacts",
        AtRest(security.keys),
        encrypt=settings.encrypt_artifacts_at_rest,
    )
    registry = Registry(
        database,
        store,
        metrics,
        watch_retain_revisions=settings.watch_retain_revisions,
        watch_queue_size=settings.watch_queue_size,
        remote_allowlist=RemoteAllowlist(settings.remote_allowlist),
    )
    await registry.open()
    artifacts = Artifacts(
        store,
        database,
        metrics,
        ArtifactSignatures(security.keys),
        registry.may_use_artifact,
        max_artifact_bytes=settings.max_artifact_bytes,
    )
    service = Service(
        RegistryServicer(registry, artifacts),
        registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server,
        registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"],
    )
    server = RegistryServer(
        [service],
        settings,
        tracer_provider=tracer_provider,
        registry=metrics_registry,
        registry_domain=registry,
        server_credentials=security.server_credentials,
        verifier=security.verifier(),
    )
    server.on_stop(registry.close)
    return server


def main(argv: Sequence[str] | None = None) -> None:
    run_service("registry", RegistrySettings, build_server, argv)
