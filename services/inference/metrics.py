"""Prometheus metrics of the inference service, in the server's registry.

Names follow the OpenTelemetry GenAI semantic conventions where one exists
(`gen_ai.server.request.duration` -> `gen_ai_server_request_duration_seconds`
and so on, with the conventions' bucket boundaries); the rest are
`lattice_inference_*`. All are updated on the event loop, so they are the
lock-free kind (`services.runtime.loop_metrics`). Process CPU/memory come
from psutil; GPU utilisation and memory from NVML, only when a GPU and
`pynvml` are present.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import psutil
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.inference.batcher import BatchObserver
from services.inference.cache import CacheObserver
from services.inference.scheduler_metrics import SchedulerMetrics
from services.inference.serving import ServingVersion
from services.runtime.loop_metrics import LoopCounter, LoopHistogram

log = logging.getLogger(__name__)

# Bucket boundaries recommended by the GenAI semantic conventions.
_DURATION_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)
_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
_TPOT_BUCKETS = (
    0.0005,
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
)
_TOKEN_BUCKETS = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
_QUEUE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class InferenceMetrics(CacheObserver):
    """Every inference metric; also the cache's and batchers' observer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.request_duration = LoopHistogram(
            "gen_ai_server_request_duration_seconds",
            "Time to serve a request, by operation and model.",
            ["gen_ai_operation_name", "gen_ai_request_model", "error_type"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = LoopHistogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time from request to the first streamed token.",
            ["gen_ai_request_model"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self.time_per_output_token = LoopHistogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time per output token after the first one.",
            ["gen_ai_request_model"],
            buckets=_TPOT_BUCKETS,
            registry=registry,
        )
        self.token_usage = LoopHistogram(
            "gen_ai_client_token_usage",
            "Tokens per request, by type (input/output).",
            ["gen_ai_operation_name", "gen_ai_request_model", "gen_ai_token_type"],
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.queue_duration = LoopHistogram(
            "lattice_inference_queue_duration_seconds",
            "Time a request waited for its micro-batch to start.",
            ["gen_ai_request_model"],
            buckets=_QUEUE_BUCKETS,
            registry=registry,
        )
        self.batch_size = LoopHistogram(
            "lattice_inference_batch_size",
            "Rows (texts) per backend batch.",
            ["gen_ai_request_model"],
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.cache_lookups = LoopCounter(
            "lattice_inference_cache_lookups",
            "Response cache lookups by result: hit, hit_local, miss, error (Redis unavailable), "
            "rejected (an entry that failed authentication: forged or corrupt; recomputed).",
            ["result"],
            registry=registry,
        )
        self.cache_errors = LoopCounter(
            "lattice_inference_cache_errors",
            "Redis operations that failed or timed out (served uncached).",
            ["operation"],
            registry=registry,
        )
        self.artifact_copies_refused = Counter(
            "lattice_inference_artifact_copies_refused",
            "Local unpacked artifact copies that failed verification (removed, fetched again).",
            registry=registry,
        )
        self.coalesced_requests = LoopCounter(
            "lattice_inference_coalesced_requests",
            "Requests that shared an identical in-flight request's model call.",
            registry=registry,
        )
        self.backend_calls = LoopCounter(
            "lattice_inference_backend_calls",
            "Model computations started, by operation.",
            ["gen_ai_operation_name"],
            registry=registry,
        )

        #: The decode loops' metrics (updated from their threads).
        self.scheduler = SchedulerMetrics(registry)

        # Loop metrics remember their children: `labels` is one dict lookup.
        self.duration_of = self.request_duration.labels
        self.tokens_of = self.token_usage.labels
        self.backend_calls_of = self.backend_calls.labels
        self._lookups_of = self.cache_lookups.labels
        self._errors_of = self.cache_errors.labels

    # -- observers ----------------------------------------------------------

    def lookup(self, result: str) -> None:
        self._lookups_of(result).inc()

    def error(self, operation: str) -> None:
        self._errors_of(operation).inc()

    def coalesced(self) -> None:
        self.coalesced_requests.inc()

    def batch_observer(self, entry: ServingVersion) -> BatchObserver:
        return _VersionBatchObserver(self, entry.name)

    def watch_versions(
        self, registry: CollectorRegistry, versions: Callable[[], Iterable[ServingVersion]]
    ) -> None:
        """Expose loaded versions, process and GPU resources at scrape time."""
        registry.register(_ServingCollector(versions))
        registry.register(_ProcessCollector())
        gpu = _GpuCollector.create()
        if gpu is not None:
            registry.register(gpu)


class _VersionBatchObserver(BatchObserver):
    def __init__(self, metrics: InferenceMetrics, model: str) -> None:
        self._queue = metrics.queue_duration.labels(model)
        self._size = metrics.batch_size.labels(model)

    def queued(self, seconds: float) -> None:
        self._queue.observe(seconds)

    def batch(self, rows: int, requests: int) -> None:
        self._size.observe(rows)


class _ServingCollector(Collector):
    def __init__(self, versions: Callable[[], Iterable[ServingVersion]]) -> None:
        self._versions = versions

    def collect(self):
        loaded = GaugeMetricFamily(
            "lattice_inference_loaded_models",
            "Versions on this replica by state (loading, ready, draining, failed).",
            labels=["gen_ai_request_model", "version", "state", "backend"],
        )
        in_flight = GaugeMetricFamily(
            "lattice_inference_in_flight_requests",
            "Requests being served now, by version.",
            labels=["gen_ai_request_model", "version"],
        )
        for entry in self._versions():
            labels = [entry.name, str(entry.version)]
            loaded.add_metric([*labels, entry.state.value, entry.backend_kind], 1)
            in_flight.add_metric(labels, entry.in_flight)
        yield loaded
        yield in_flight


class _ProcessCollector(Collector):
    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # primes the CPU counter

    def collect(self):
        memory = self._process.memory_info()
        yield GaugeMetricFamily(
            "lattice_process_cpu_percent",
            "CPU use of this process since the previous scrape (100 = one core).",
            value=self._process.cpu_percent(None),
        )
        yield GaugeMetricFamily(
            "lattice_process_resident_memory_bytes", "Resident memory.", value=memory.rss
        )
        yield GaugeMetricFamily(
            "lattice_system_memory_used_ratio",
            "Share of the machine's memory in use.",
            value=psutil.virtual_memory().percent / 100.0,
        )


class _GpuCollector(Collector):
    """NVML utilisation and memory per GPU. Not exercised by tests here: this
    machine has no GPU."""

    def __init__(self, nvml, count: int) -> None:
        self._nvml = nvml
        self._count = count

    @classmethod
    def create(cls) -> _GpuCollector | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
        except Exception:
            return None  # no NVML library or no GPU: nothing to report
        return cls(pynvml, count) if count else None

    def collect(self):
        utilisation = GaugeMetricFamily(
            "lattice_gpu_utilization_ratio", "GPU busy share.", labels=["gpu"]
        )
        used = GaugeMetricFamily(
            "lattice_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"]
        )
        total = GaugeMetricFamily("lattice_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
        for index in range(self._count):
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            utilisation.add_metric([str(index)], rates.gpu / 100.0)
            used.add_metric([str(index)], memory.used)
            total.add_metric([str(index)], memory.total)
        yield utilisation
        yield used
        yield total
