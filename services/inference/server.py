"""Wires the inference service: settings, registry view, model manager,
cache, engine, servicer, server."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from lattice.v1 import common_pb2, inference_pb2, inference_pb2_grpc
from services.inference.backends import BackendFactory, LoadSpec
from services.inference.cache import ResponseCache
from services.inference.decode_process import start_forkserver
from services.inference.engine import InferenceEngine
from services.inference.fetch import ArtifactFetcher
from services.inference.load_reports import RegistryLoadReporter
from services.inference.manager import ModelManager
from services.inference.metrics import InferenceMetrics
from services.inference.requests import Limits
from services.inference.sealing import CacheSealer
from services.inference.servicer import InferenceServicer
from services.inference.transformers_backend import TransformersBackend
from services.inference.triton_backend import TritonBackend
from services.inference.word_vectors import WordVectorBackend
from services.runtime import LatticeServer, ServerSettings, Service
from services.runtime.entrypoint import run_service
from services.runtime.identity import service_caller
from services.runtime.registry_view import RegistryView
from services.runtime.remote_targets import RemoteAllowlist
from services.runtime.security import service_security
from services.runtime.signatures import ArtifactSignatures


@dataclasses.dataclass(frozen=True)
class InferenceSettings(ServerSettings):
    port: int = 50053
    #: The registry to watch and download artifacts from.
    registry_address: str = "127.0.0.1:50052"
    #: Redis for the response cache, e.g. redis://127.0.0.1:6379/0, or Sentinel
    #: (redis+sentinel://h:26379,h2:26379/<master>) or Cluster (redis+cluster://h:6379,h2:6379);
    #: empty = no cache.
    redis_url: str = ""
    cache_ttl_seconds: int = 3600
    #: Redis calls slower than this are abandoned and the request is served uncached
    #: (measured on the event loop, so a saturated replica needs some headroom).
    cache_timeout_ms: float = 100.0
    #: After a Redis failure, skip Redis for this long before trying again.
    cache_retry_seconds: float = 1.0
    #: An in-process tier of decoded answers in front of Redis (0 = off): a hot key
    #: costs no Redis round trip. Safe per replica: keys name the artifact digest
    #: and the request, so an entry never goes stale (it expires with the TTL).
    #: Bounded by entries and by bytes (the answers' encoded size).
    cache_local_entries: int = 10_000
    cache_local_bytes: int = 64 * 1024 * 1024
    #: Micro-batching: most rows (texts) per batch, and longest wait for a batch to fill.
    max_batch_size: int = 32
    max_batch_wait_ms: float = 5.0
    #: Continuous batching of Generate and GenerateStream (local models): most
    #: sequences decoded together (0 = 32 on CPU, 256 on a GPU) ...
    max_running_sequences: int = 0
    #: ... KV-cache tokens reserved for them, prompt + max_new_tokens each
    #: (0 = max_running_sequences x the model's context) ...
    max_kv_cache_tokens: int = 0
    #: ... requests waiting for a slot before RESOURCE_EXHAUSTED (0 = 32 x running) ...
    max_queued_sequences: int = 0
    #: ... and prompt tokens prefilled in one step; a longer prompt is prefilled
    #: in chunks of this size between decode steps (0 = 512 on CPU, 2048 on a
    #: GPU, at most the model's context).
    max_prefill_tokens: int = 0
    #: torch's intra-op threads, process-wide (0 = one less than the usable
    #: cores, at least 1). Generation runs in one thread per model, so this is
    #: the whole budget: more threads than free cores is much slower.
    torch_threads: int = 0
    #: Run each causal LM's decode loop in a process of its own (the model's
    #: weights live there; this process keeps its tokenizer). Off, the loop is
    #: a thread here and shares the interpreter lock with the event loop: a
    #: burst of 32 streams then prefills 2-4x slower (bench/stream_burst_ttft.py).
    decode_process: bool = True
    #: "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1" ...
    device: str = "auto"
    #: Worker threads per loaded local embedding model.
    backend_threads: int = 4
    default_max_new_tokens: int = 64
    #: Hard ceiling on max_new_tokens; a model's policy may set a lower one.
    max_new_tokens_limit: int = 4096
    #: How long a request waits for its version to finish loading.
    load_wait_seconds: float = 30.0
    #: How long an offline version may take to finish its in-flight requests.
    drain_timeout_seconds: float = 60.0
    #: Triton (KServe v2 gRPC, host:port) for TRITON-format versions whose URI,
    #: params or tags name no address.
    triton_url: str = ""
    #: host:port patterns a version may name as its remote backend (checked again
    #: here after the registry, before connecting); empty = only triton_url.
    remote_allowlist: tuple[str, ...] = ()


def backend_factories(
    settings: InferenceSettings,
    tracer_provider: TracerProvider | None = None,
    metrics: InferenceMetrics | None = None,
) -> dict[int, BackendFactory]:
    """Which backend serves which artifact format."""
    allowlist = RemoteAllowlist(settings.remote_allowlist)
    scheduling = {
        "max_running": settings.max_running_sequences,
        "max_kv_tokens": settings.max_kv_cache_tokens,
        "max_queued": settings.max_queued_sequences,
        "max_prefill_tokens": settings.max_prefill_tokens,
    }

    def transformers(spec: LoadSpec) -> TransformersBackend:
        return TransformersBackend(
            spec,
            max_batch_size=settings.max_batch_size,
            threads=settings.backend_threads,
            torch_threads=settings.torch_threads,
            scheduling=scheduling,
            observer=metrics.scheduler.observer(spec.model_name, spec.version)
            if metrics is not None
            else None,
            tracer=trace.get_tracer(__name__, tracer_provider=tracer_provider),
            decode_process=settings.decode_process,
        )

    def triton(spec: LoadSpec) -> TritonBackend:
        return TritonBackend(
            spec,
            default_address=settings.triton_url or None,
            allowlist=allowlist,
            tracer_provider=tracer_provider,
        )

    return {
        common_pb2.ARTIFACT_FORMAT_TRANSFORMERS: transformers,
        common_pb2.ARTIFACT_FORMAT_TRITON: triton,
        common_pb2.ARTIFACT_FORMAT_WORD_VECTORS: WordVectorBackend,
    }


async def build_server(
    settings: InferenceSettings, *, tracer_provider: TracerProvider | None = None
) -> LatticeServer:
    registry = CollectorRegistry()
    metrics = InferenceMetrics(registry)
    security = service_security(settings, "inference")
    channel = security.channel(
        settings.registry_address, "registry", tracer_provider=tracer_provider
    )
    view = RegistryView(
        settings.registry_address,
        tracer_provider=tracer_provider,
        channel=channel,
        caller=service_caller("inference"),
    )
    fetcher = ArtifactFetcher(
        channel,
        settings.data_dir / "inference" / "artifacts",
        keys=security.keys,
        signatures=ArtifactSignatures(security.keys),
        on_refused_copy=metrics.artifact_copies_refused.inc,
        caller=service_caller("inference"),
    )
    reports = RegistryLoadReporter(channel, caller=service_caller("inference"))
    manager = ModelManager(
        view,
        fetcher,
        backend_factories(settings, tracer_provider, metrics),
        device=settings.device,
        max_batch_size=settings.max_batch_size,
        max_batch_wait=settings.max_batch_wait_ms / 1000,
        drain_timeout=settings.drain_timeout_seconds,
        batch_observer=metrics.batch_observer,
        tracer_provider=tracer_provider,
        reports=reports,
    )
    metrics.watch_versions(registry, manager.versions)
    cache = None
    if settings.redis_url:
        cache = ResponseCache(
            settings.redis_url,
            ttl_seconds=settings.cache_ttl_seconds,
            timeout=settings.cache_timeout_ms / 1000,
            retry_interval=settings.cache_retry_seconds,
            observer=metrics,
            tracer_provider=tracer_provider,
            local_entries=settings.cache_local_entries,
            local_bytes=settings.cache_local_bytes,
            sealer=CacheSealer(security.keys),
        )
    limits = Limits(
        default_max_new_tokens=settings.default_max_new_tokens,
        max_new_tokens=settings.max_new_tokens_limit,
        max_batch_size=settings.max_batch_size,
    )
    engine = InferenceEngine(
        manager,
        view,
        limits=limits,
        cache=cache,
        metrics=metrics,
        tracer_provider=tracer_provider,
        load_wait=settings.load_wait_seconds,
    )
    service = Service(
        InferenceServicer(engine, manager, view),
        inference_pb2_grpc.add_InferenceServiceServicer_to_server,
        inference_pb2.DESCRIPTOR.services_by_name["InferenceService"],
    )
    # Health says SERVING only once the registry view is complete and the versions
    # online have loaded: before that requests would wait for a load or fail.
    server = LatticeServer(
        [service],
        settings,
        tracer_provider=tracer_provider,
        registry=registry,
        readiness=manager.wait_settled,
        server_credentials=security.server_credentials,
        verifier=security.verifier(),
    )
    reports.serving_on(server.port)
    if settings.decode_process:
        start_forkserver()
    await view.start()
    await manager.start()

    async def close() -> None:
        await manager.stop()
        await view.stop()
        if cache is not None:
            await cache.close()
        await channel.close()

    server.on_stop(close)
    return server


def main(argv: Sequence[str] | None = None) -> None:
    run_service("inference", InferenceSettings, build_server, argv)
