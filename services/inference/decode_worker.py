"""The decode process's side: one causal LM's `Scheduler`, run in a process of
its own, its text and telemetry relayed to the serving process over a pipe.

Why a process: in the serving process the decode loop's thread shares one
interpreter lock with the event loop that takes in requests. Every torch op
of a forward pass gives the lock up and must win it back, so while a burst of
streams arrives a 32-row prefill ran 2.3-4x slower than the bare model
(bench/stream_burst_ttft.py). vLLM's engine core runs in its own process for
the same reason. Here the loop owns an interpreter, and the serving process
only moves text.

The wire: the serving process sends tuples (`submit`, `cancel`, `close`); this
side answers with one list of entries per flush (`Relay`): a decode step's
text for every stream it served goes in one message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util import types as otel_types

from lattice.errors import DeadlineExceeded, LatticeError, ResourceExhausted, Unavailable
from services.inference.backends import GenerationParams, StreamChunk
from services.inference.causal_lm import DecodeLoopOptions, load_causal_lm, start_decode_loop
from services.inference.load_reports import failure_reason
from services.inference.scheduler import Handle, Scheduler, SchedulerObserver, Wakeups
from services.runtime.logs import configure_logging
from services.runtime.telemetry import install_global_tracing

log = logging.getLogger(__name__)

# Entry tags, decode process -> serving process.
TEXT = "t"  # (TEXT, id, delta)
CLOSE = "c"  # (CLOSE, id, StreamChunk)
FAIL = "f"  # (FAIL, id, (kind, message, retry_after))
EVENT = "e"  # (EVENT, id, name, attributes): a span event of the request
OBSERVE = "o"  # (OBSERVE, method, args): a `SchedulerObserver` call
STATE = "s"  # (STATE, running, waiting, kv_tokens, kv_capacity)
#: (COUNTS, steps, tokens_generated, kv_tokens, running): first in every message
COUNTS = "n"


def encode_error(error: BaseException) -> tuple[str, str, float | None]:
    """A sequence's failure as plain values: the loop fails sequences with
    DeadlineExceeded, ResourceExhausted or Unavailable (anything else is
    relayed as Unavailable)."""
    kind = type(error).__name__
    if kind not in ("DeadlineExceeded", "ResourceExhausted"):
        kind = "Unavailable"
    message = error.message if isinstance(error, LatticeError) else "the decode loop failed"
    return kind, message, getattr(error, "retry_after", None)


def decode_error(encoded: tuple[str, str, float | None]) -> LatticeError:
    kind, message, retry_after = encoded
    if kind == "DeadlineExceeded":
        return DeadlineExceeded(message)
    if kind == "ResourceExhausted":
        return ResourceExhausted(message, retry_after=retry_after)
    return Unavailable(message, retry_after=retry_after)


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What the decode process loads, and how it runs the loop."""

    model_dir: str
    device: str
    options: DecodeLoopOptions
    #: (level, json_lines) of the serving process's logging, to log alike.
    logging: tuple[str, bool] | None = None


class Relay:
    """Entries for the serving process, sent together at each flush (from the
    loop's thread at the end of a step, or at once for a lone event)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._entries: list[tuple[Any, ...]] = []
        #: Sequences not yet finished, by request id (for cancels).
        self.sinks: dict[int, RelaySink] = {}
        self.scheduler: Scheduler | None = None

    def add(self, entry: tuple[Any, ...]) -> None:
        with self._lock:
            self._entries.append(entry)

    def flush(self) -> None:
        with self._lock:
            if not self._entries:
                return
            entries, self._entries = self._entries, []
            scheduler = self.scheduler
            if scheduler is not None:  # counts first: a caller with its answer sees them
                counts = (
                    COUNTS,
                    scheduler.steps,
                    scheduler.tokens_generated,
                    scheduler.kv_tokens,
                    scheduler.running,
                )
                entries.insert(0, counts)
            # OSError: the serving process is gone; the main loop sees EOF and exits.
            with contextlib.suppress(OSError):
                self._conn.send(entries)


class RelayWakeups(Wakeups):
    """A step's end: its text goes to the serving process in one message."""

    __slots__ = ("_relay",)

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self._relay = relay

    def flush(self) -> None:
        self._relay.flush()


class RelaySink:
    """One sequence's text, relayed (a unary request's only at its end)."""

    def __init__(self, relay: Relay, request: int, streaming: bool) -> None:
        self._relay = relay
        self._request = request
        self.streaming = streaming
        self.handle: Handle | None = None

    def put(self, delta: str, wakeups: Wakeups | None = None) -> None:
        if delta and self.streaming:
            self._relay.add((TEXT, self._request, delta))
            if wakeups is None:
                self._relay.flush()

    def close(self, last: StreamChunk, wakeups: Wakeups | None = None) -> None:
        self._relay.sinks.pop(self._request, None)
        self._relay.add((CLOSE, self._request, last))
        if wakeups is None:
            self._relay.flush()

    def fail(self, error: BaseException) -> None:
        self._relay.sinks.pop(self._request, None)
        self._relay.add((FAIL, self._request, encode_error(error)))
        self._relay.flush()


class RelaySpan(NonRecordingSpan):
    """The request's span, as the loop sees it: its context (for the links of
    forward-pass spans) and its events, recorded where the span lives."""

    def __init__(self, relay: Relay, request: int, context: SpanContext) -> None:
        super().__init__(context)
        self._relay = relay
        self._request = request

    def add_event(
        self,
        name: str,
        attributes: otel_types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        self._relay.add((EVENT, self._request, name, dict(attributes or {})))


class RelayObserver(SchedulerObserver):
    """Metrics hooks, replayed on the serving process's observer."""

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    def step(self, rows: int, seconds: float, prefill: bool) -> None:
        self._relay.add((OBSERVE, "step", (rows, seconds, prefill)))

    def queued(self, seconds: float) -> None:
        self._relay.add((OBSERVE, "queued", (seconds,)))

    def cancelled(self, steps: int) -> None:
        self._relay.add((OBSERVE, "cancelled", (steps,)))

    def first_token(self, steps: int) -> None:
        self._relay.add((OBSERVE, "first_token", (steps,)))

    def preempted(self) -> None:
        self._relay.add((OBSERVE, "preempted", ()))

    def state(self, running: int, waiting: int, kv_tokens: int, kv_capacity: int) -> None:
        self._relay.add((STATE, running, waiting, kv_tokens, kv_capacity))
        self._relay.flush()


def serve(conn: Connection, spec: WorkerSpec) -> None:
    """The decode process's main: load, say "ready", then take commands until
    the serving process says "close" or goes away. Ctrl-C reaches the whole
    process group: only the serving process acts on it (and closes this one)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if spec.logging is not None:
        configure_logging("inference", *spec.logging)
    install_global_tracing("inference")
    relay = Relay(conn)
    observer = RelayObserver(relay)
    try:
        model, tokenizer = load_causal_lm(spec.model_dir, spec.device)
        scheduler = start_decode_loop(
            model,
            tokenizer,
            spec.device,
            spec.options,
            observer=observer,
            tracer=trace.get_tracer(__name__),
            wakeups=functools.partial(RelayWakeups, relay),
        )
    except Exception as exc:
        log.debug("load failed", exc_info=True)
        conn.send(("failed", failure_reason(exc)))
        return
    relay.scheduler = scheduler
    conn.send(("ready", scheduler.limits, scheduler.context_length))
    try:
        _take_commands(conn, relay, scheduler)
    finally:
        scheduler.close()
        relay.flush()


def _take_commands(conn: Connection, relay: Relay, scheduler: Scheduler) -> None:
    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):
            return
        kind = command[0]
        if kind == "submit":
            _submit(relay, scheduler, *command[1:])
        elif kind == "cancel":
            sink = relay.sinks.get(command[1])
            if sink is not None and sink.handle is not None:
                sink.handle.cancel()
        elif kind == "close":
            return


def _submit(
    relay: Relay,
    scheduler: Scheduler,
    request: int,
    prompt: list[int],
    params: GenerationParams,
    streaming: bool,
    deadline: float | None,
    tenant: str,
    trace_ids: tuple[int, int, int] | None,
) -> None:
    context = (
        SpanContext(
            trace_ids[0], trace_ids[1], is_remote=True, trace_flags=TraceFlags(trace_ids[2])
        )
        if trace_ids is not None
        else trace.INVALID_SPAN_CONTEXT
    )
    sink = relay.sinks[request] = RelaySink(relay, request, streaming)
    try:
        sink.handle = scheduler.submit(
            prompt,
            params,
            streaming=streaming,
            deadline=deadline,
            tenant=tenant,
            span=RelaySpan(relay, request, context),
            sink=sink,
        )
    except LatticeError as exc:  # closing, or the queue filled since the serving side checked
        sink.fail(exc)
