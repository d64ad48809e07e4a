"""Wires the trainer service: settings, stores, registry client, runner, servicer, server."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from lattice.v1 import trainer_pb2, trainer_pb2_grpc
from services.runtime import LatticeServer, ServerSettings, Service
from services.runtime.entrypoint import run_service
from services.runtime.security import key_ring_path, service_security
from services.trainer.data.confine import SourceRoots
from services.trainer.data.service import DatasetService
from services.trainer.data.store import DatasetStore
from services.trainer.data.uploads import SourceUploads, UploadLimits
from services.trainer.jobs import launchers
from services.trainer.jobs.kube import PyTorchJobs
from services.trainer.jobs.metrics import TrainerMetrics
from services.trainer.jobs.process import WORKER_MODULE
from services.trainer.jobs.pytorchjob import ClusterPolicy
from services.trainer.jobs.runner import JobRunner, RunnerOptions
from services.trainer.jobs.store import JobStore
from services.trainer.jobs.validation import MachineLimits
from services.trainer.registry_client import RegistryClient
from services.trainer.servicer import TrainerServicer
from services.trainer.worker import allocator


@dataclasses.dataclass(frozen=True)
class TrainerSettings(ServerSettings):
    port: int = 50054
    #: Owner given to datasets and jobs stored before they had owners.
    default_tenant: str = "default"
    #: Directories PrepareDataset may read, repeatable; "{tenant}" stands for the
    #: caller's tenant. None = "<data-dir>/sources/{tenant}" (each tenant its own).
    source_root: tuple[str, ...] = ()
    #: Most files one dataset source may name (a walk past this is refused).
    max_source_files: int = 100_000
    #: Threads that walk sources and prepare datasets (preparations beyond queue).
    prepare_workers: int = 2
    #: UploadSources limits: bytes per file, bytes and files per upload, and the
    #: bytes one tenant keeps under its source directory.
    upload_max_file_bytes: int = 256 * 1024**2
    upload_max_bytes: int = 1024**3
    upload_max_files: int = 10_000
    upload_max_tenant_bytes: int = 10 * 1024**3
    #: Where finished jobs register their model ("" = no registry).
    registry_address: str = "127.0.0.1:50052"
    #: Jobs whose process groups run at the same time; the rest wait in the queue.
    max_concurrent_jobs: int = 1
    #: Process-group starts per job (the first run plus restarts from checkpoints).
    max_attempts: int = 3
    #: Largest processes_per_node a job may ask for; 0 = the machine's CPU (GPU) count.
    max_processes_per_node: int = 0
    #: Nodes a job may span. Their torchrun agents run on this host and meet by c10d
    #: rendezvous on loopback (a cluster spreads them over machines: PyTorchJob).
    max_nodes: int = 1
    #: Extra torchrun arguments, comma-separated (e.g. "--master-port=29600").
    torchrun_args: tuple[str, ...] = ()
    #: Python that runs torchrun (default: this interpreter).
    python: str = ""
    #: Seconds between SIGTERM and SIGKILL when a job's process group is stopped.
    cancel_grace_seconds: float = 5.0
    #: How often the service reads the workers' event files, in seconds.
    poll_interval_seconds: float = 0.25
    #: Parameter statistics every N steps, weight histograms every M steps.
    stats_interval_steps: int = 10
    histogram_interval_steps: int = 100
    #: Workers' host memory: "retain" keeps freed blocks in the heap for the next step
    #: (no page faults per step); "system" leaves the C library's policy alone.
    worker_allocator: str = "retain"  # allocator.RETAIN
    #: Where job attempts run: "local" (torchrun on this host) or "pytorchjob" (one
    #: Kubeflow PyTorchJob per attempt; max_nodes and max_processes_per_node then
    #: bound each job's pods, and data_dir must be the shared volume's mount).
    launcher: str = "local"  # launchers.LOCAL
    #: PyTorchJob launcher: the namespace its PyTorchJobs are created in.
    pytorchjob_namespace: str = "lattice"
    #: The trainer image the pods run (required with launcher pytorchjob).
    pytorchjob_image: str = ""
    #: CPU each pod (one per node) requests.
    pytorchjob_cpu: str = "4"
    #: Memory each pod requests.
    pytorchjob_memory: str = "16Gi"
    #: GPUs per pod for NCCL jobs (0 = CPU pods, gloo).
    pytorchjob_gpus_per_node: int = 0
    #: The ReadWriteMany claim mounted at data_dir in the trainer and every pod.
    pytorchjob_data_claim: str = "training-data"
    #: Kubeconfig file for the API server; empty = in-cluster service account.
    pytorchjob_kubeconfig: str = ""
    #: Seconds one watch of a PyTorchJob lasts before it is renewed.
    pytorchjob_watch_seconds: int = 60

    #: Seal new prepared datasets (AES-GCM, key ring) on disk; existing ones stay
    #: readable either way. Off by default: the volume's own encryption may be enough.
    encrypt_datasets_at_rest: bool = False


def cluster_launcher(settings: TrainerSettings) -> launchers.PyTorchJobLauncher:
    """The PyTorchJob launcher the settings describe (ValueError if they cannot work)."""
    if not settings.data_dir.is_absolute():
        raise ValueError(
            "launcher pytorchjob needs an absolute data_dir: the shared volume's mount, "
            "at the same path in the trainer and every pod"
        )
    if not settings.pytorchjob_image:
        raise ValueError("launcher pytorchjob needs pytorchjob_image (the trainer image)")
    policy = ClusterPolicy(
        image=settings.pytorchjob_image,
        namespace=settings.pytorchjob_namespace,
        cpu=settings.pytorchjob_cpu,
        memory=settings.pytorchjob_memory,
        data_claim=settings.pytorchjob_data_claim,
        data_mount=str(settings.data_dir),
    )
    gpus = settings.pytorchjob_gpus_per_node
    limits = MachineLimits(
        cpus=0,
        gpus=gpus,
        max_processes_per_node=settings.max_processes_per_node or max(gpus, 1),
        max_nodes=settings.max_nodes,
        cluster=True,
    )
    jobs = PyTorchJobs.connect(
        settings.pytorchjob_kubeconfig,
        settings.pytorchjob_namespace,
        settings.pytorchjob_watch_seconds,
    )
    return launchers.PyTorchJobLauncher(jobs, policy, limits)


async def build_server(
    settings: TrainerSettings,
    *,
    tracer_provider: TracerProvider | None = None,
    worker_module: str = WORKER_MODULE,
) -> LatticeServer:
    """`worker_module` is what torchrun runs per rank (tests pass a worker with an
    injected fault)."""
    if settings.launcher not in launchers.CHOICES:
        raise ValueError(
            f"launcher must be one of {', '.join(launchers.CHOICES)}, not {settings.launcher!r}"
        )
    if settings.worker_allocator not in allocator.CHOICES:
        raise ValueError(
            f"worker_allocator must be one of {', '.join(allocator.CHOICES)}, "
            f"not {settings.worker_allocator!r}"
        )
    root = settings.data_dir / "trainer"
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("lattice.trainer")
    metrics_registry = CollectorRegistry()
    metrics = TrainerMetrics(metrics_registry)
    security = service_security(settings, "trainer")
    channel = None
    registry = None
    if settings.registry_address:
        channel = security.channel(
            settings.registry_address, "registry", tracer_provider=tracer_provider
        )
        registry = RegistryClient(channel)
    datasets = DatasetStore(
        root / "datasets",
        default_tenant=settings.default_tenant,
        keys=security.keys,
        encrypt=settings.encrypt_datasets_at_rest,
    )
    store = JobStore(root / "jobs.db", default_tenant=settings.default_tenant)
    roots = SourceRoots.default(
        settings.data_dir.resolve(), settings.source_root, settings.max_source_files
    )
    runner = JobRunner(
        store,
        datasets,
        registry,
        RunnerOptions(
            jobs_dir=root / "jobs",
            max_concurrent_jobs=settings.max_concurrent_jobs,
            max_attempts=settings.max_attempts,
            poll_interval=settings.poll_interval_seconds,
            cancel_grace=settings.cancel_grace_seconds,
            torchrun_args=settings.torchrun_args,
            python=settings.python or sys.executable,
            max_processes_per_node=settings.max_processes_per_node,
            max_nodes=settings.max_nodes,
            stats_interval=settings.stats_interval_steps,
            histogram_interval=settings.histogram_interval_steps,
            worker_allocator=settings.worker_allocator,
            worker_module=worker_module,
            key_ring_file=str(key_ring_path(settings).resolve()),
        ),
        metrics,
        tracer,
        source_roots=roots,
        launcher=cluster_launcher(settings) if settings.launcher == launchers.PYTORCHJOB else None,
    )
    await runner.start()
    dataset_service = DatasetService(
        datasets,
        registry,
        roots,
        lambda _d: metrics.datasets.inc(),
        workers=settings.prepare_workers,
    )
    uploads = SourceUploads(
        roots,
        dataset_service.off_loop,
        UploadLimits(
            max_file_bytes=settings.upload_max_file_bytes,
            max_upload_bytes=settings.upload_max_bytes,
            max_upload_files=settings.upload_max_files,
            max_tenant_bytes=settings.upload_max_tenant_bytes,
        ),
    )
    servicer = TrainerServicer(dataset_service, runner, uploads)
    service = Service(
        servicer,
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
        trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
    )
    server = LatticeServer(
        [service],
        settings,
        tracer_provider=tracer_provider,
        registry=metrics_registry,
        server_credentials=security.server_credentials,
        verifier=security.verifier(),
    )

    async def close() -> None:
        await runner.stop()
        dataset_service.close()
        store.close()
        if channel is not None:
            await channel.close()

    server.on_stop(close)
    server.runner = runner  # type: ignore[attr-defined]  # tests reach the domain object
    return server


def main(argv: Sequence[str] | None = None) -> None:
    run_service("trainer", TrainerSettings, build_server, argv)
