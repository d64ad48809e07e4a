"""Prometheus metrics of the decode loops (`scheduler.Scheduler`).

Updated from each loop's own thread, so these are prometheus_client's
thread-safe kinds, not the event-loop-only `loop_metrics`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.inference.scheduler import SchedulerObserver

_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_QUEUE_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
_STEPS_BUCKETS = (0, 1, 2, 3, 5, 10, 30, 100)

_LABELS = ["gen_ai_request_model", "version"]


class SchedulerMetrics:
    """The metric families; `observer` gives one version's hooks."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.running = Gauge(
            "lattice_inference_running_sequences",
            "Sequences in the decode batch.",
            _LABELS,
            registry=registry,
        )
        self.waiting = Gauge(
            "lattice_inference_waiting_sequences",
            "Sequences queued for admission.",
            _LABELS,
            registry=registry,
        )
        self.kv_tokens = Gauge(
            "lattice_inference_kv_cache_tokens",
            "KV-cache slots held by the batch (rows x width, padding included).",
            _LABELS,
            registry=registry,
        )
        self.kv_capacity = Gauge(
            "lattice_inference_kv_cache_capacity_tokens",
            "KV-cache token budget of the scheduler.",
            _LABELS,
            registry=registry,
        )
        self.step_seconds = Histogram(
            "lattice_inference_step_duration_seconds",
            "Time of one forward pass, by phase (prefill or decode).",
            [*_LABELS, "phase"],
            buckets=_STEP_BUCKETS,
            registry=registry,
        )
        self.batch_rows = Histogram(
            "lattice_inference_step_batch_size",
            "Sequences per forward pass, by phase.",
            [*_LABELS, "phase"],
            buckets=_ROWS_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "lattice_inference_scheduler_queue_seconds",
            "Time a sequence waited before its prefill.",
            _LABELS,
            buckets=_QUEUE_BUCKETS,
            registry=registry,
        )
        self.cancel_steps = Histogram(
            "lattice_inference_cancel_steps",
            "Forward passes between a cancel and the sequence leaving the batch.",
            _LABELS,
            buckets=_STEPS_BUCKETS,
            registry=registry,
        )
        self.first_token_steps = Histogram(
            "lattice_inference_first_token_steps",
            "Forward passes between a sequence's submission and its first token.",
            _LABELS,
            buckets=_STEPS_BUCKETS,
            registry=registry,
        )
        self.preemptions = Counter(
            "lattice_inference_preemptions",
            "Running sequences evicted to make room.",
            _LABELS,
            registry=registry,
        )

    def observer(self, model: str, version: int) -> SchedulerObserver:
        return _VersionObserver(self, model, str(version))


class _VersionObserver(SchedulerObserver):
    def __init__(self, metrics: SchedulerMetrics, model: str, version: str) -> None:
        labels = (model, version)
        self._running = metrics.running.labels(*labels)
        self._waiting = metrics.waiting.labels(*labels)
        self._kv = metrics.kv_tokens.labels(*labels)
        self._capacity = metrics.kv_capacity.labels(*labels)
        self._step = {p: metrics.step_seconds.labels(*labels, p) for p in ("prefill", "decode")}
        self._rows = {p: metrics.batch_rows.labels(*labels, p) for p in ("prefill", "decode")}
        self._queue = metrics.queue_seconds.labels(*labels)
        self._cancel = metrics.cancel_steps.labels(*labels)
        self._preempted = metrics.preemptions.labels(*labels)
        self._first = metrics.first_token_steps.labels(*labels)

    def step(self, rows: int, seconds: float, prefill: bool) -> None:
        phase = "prefill" if prefill else "decode"
        self._step[phase].observe(seconds)
        self._rows[phase].observe(rows)

    def state(self, running: int, waiting: int, kv_tokens: int, kv_capacity: int) -> None:
        self._running.set(running)
        self._waiting.set(waiting)
        self._kv.set(kv_tokens)
        self._capacity.set(kv_capacity)

    def queued(self, seconds: float) -> None:
        self._queue.observe(seconds)

    def cancelled(self, steps: int) -> None:
        self._cancel.observe(steps)

    def first_token(self, steps: int) -> None:
        self._first.observe(steps)

    def preempted(self) -> None:
        self._preempted.inc()
