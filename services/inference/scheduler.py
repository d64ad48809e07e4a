"""Continuous (iteration-level) batching for one loaded causal LM: one decode
loop serving unary Generate and GenerateStream together.

One dedicated thread runs the loop; each iteration
1. drops sequences whose caller went away (cancel or deadline) and frees
   their KV memory,
2. admits queued sequences, round-robin across tenants, within the bounds on
   running sequences, reserved KV tokens and prefill tokens per step, and
   prefills them as one separate step (so a burst of prompts stalls running
   streams for at most one bounded prefill),
3. runs one decode step, a single forward pass over every running sequence,
   and samples each row with its own parameters.

A prompt longer than the per-step prefill bound is prefilled in chunks of at
most that many tokens, one chunk per iteration, each followed by a decode
step of the running sequences (chunked prefill): a long prompt delays every
running stream's next token by one bounded chunk at a time, never by its
whole prefill. One long prompt is chunked at a time; it joins the batch when
its last chunk is done.
Sequences that finish leave the batch in the same iteration.

Admission reserves prompt + max_new_tokens per sequence, so a sequence once
admitted always fits: nothing is ever preempted (the metric exists and stays
0 by construction). Beyond the running bounds requests wait in a bounded
queue; beyond that, RESOURCE_EXHAUSTED with a retry hint. A queued request
whose deadline passes fails with DEADLINE_EXCEEDED without costing compute.

The event loop and the thread meet in two places only: the queue (under one
lock) and each request's `Outbox`, which coalesces text: a reader slower than
the model gets several tokens in one message, never an unbounded backlog.
The outboxes a step fills are woken together, one `call_soon_threadsafe` per
step and event loop (`Wakeups`), not one per stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from opentelemetry import context as otel_context
from opentelemetry import trace

from lattice.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted, Unavailable
from services.inference.backends import (
    FinishReason,
    GenerationParams,
    StreamChunk,
    request_tenant,
)
from services.inference.detokenize import TextAssembler
from services.inference.sampling import generator_for, sample

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class SchedulerLimits:
    """Bounds on one scheduler (see `default_limits`)."""

    max_running: int = 32
    max_kv_tokens: int = 32 * 1024
    max_queued: int = 1024
    #: Prompt tokens prefilled per iteration; a longer prompt goes in chunks.
    max_prefill_tokens: int = 512


def default_limits(
    *,
    context_length: int | None,
    device: str,
    kv_bytes_per_token: int = 0,
    free_memory: int = 0,
    max_running: int = 0,
    max_kv_tokens: int = 0,
    max_queued: int = 0,
    max_prefill_tokens: int = 0,
) -> SchedulerLimits:
    """Limits where 0 means "derive": 32 running sequences on CPU (past that a
    step costs about as much per row as running alone), 256 on a GPU; KV room
    for every running sequence at the full context, but no more than a
    quarter of the free memory; a queue 32 times the running bound; 512
    prompt tokens of prefill per step on CPU (on bench/streaming.py's model a
    511-token prefill took 18 ms, a 32-row decode step 2.7 ms: one chunk
    delays running streams by about 7 steps at most), 2048 on a GPU, never
    more than the context."""
    context = context_length or 1024
    running = max_running or (256 if device.startswith("cuda") else 32)
    kv_tokens = max_kv_tokens
    if not kv_tokens:
        kv_tokens = running * context
        if kv_bytes_per_token and free_memory:
            kv_tokens = max(context, min(kv_tokens, free_memory // 4 // kv_bytes_per_token))
    return SchedulerLimits(
        max_running=running,
        max_kv_tokens=kv_tokens,
        max_queued=max_queued or 32 * running,
        max_prefill_tokens=max_prefill_tokens
        or min(context, 2048 if device.startswith("cuda") else 512),
    )


def reservation(
    prompt_tokens: int, params: GenerationParams, context: int | None, limits: SchedulerLimits
) -> tuple[int, int]:
    """(new-token budget, KV tokens reserved) of a request, or INVALID_ARGUMENT
    when it could never fit."""
    budget = params.max_new_tokens
    if context:
        budget = min(budget, context - prompt_tokens)
    reserved = prompt_tokens + budget
    if reserved > limits.max_kv_tokens:
        raise InvalidArgument(
            "parameters.max_new_tokens",
            f"prompt and max_new_tokens need {reserved} KV-cache tokens; "
            f"this model serves at most {limits.max_kv_tokens}",
        )
    return budget, reserved


def queue_full(name: str, waiting: int, limits: SchedulerLimits) -> ResourceExhausted:
    """The refusal beyond the queue bound, with about how long until a slot
    frees: the queue's share of running work."""
    hint = max(0.1, min(10.0, waiting / max(1, limits.max_running) * 0.5))
    return ResourceExhausted(
        f"{name} has {waiting} requests queued, its limit; retry shortly", retry_after=hint
    )


class GenerationHandle(Protocol):
    """A submitted request, as its caller holds it."""

    async def next(self) -> StreamChunk:
        """Everything produced since the last call, as one chunk (waits for some)."""
        ...

    def cancel(self) -> None:
        """The caller gave up: the sequence leaves before the next forward pass."""


class DecodeLoop(Protocol):
    """A loaded causal LM's decode loop, in this process (`Scheduler`) or in
    a decode process (`decode_process.DecodeProcess`)."""

    @property
    def alive(self) -> bool: ...
    @property
    def active(self) -> int: ...
    @property
    def context_length(self) -> int | None: ...
    @property
    def tokens_generated(self) -> int: ...
    @property
    def stopped_because(self) -> str:
        """Why the loop stopped on its own ("" while it runs, or when closed)."""
        ...

    def submit(
        self,
        prompt: list[int],
        params: GenerationParams,
        *,
        streaming: bool,
        deadline: float | None = None,
    ) -> GenerationHandle: ...
    def close(self) -> None: ...


class SchedulerObserver:
    """Hooks for metrics; the default does nothing. Called from the loop's
    thread, so implementations must be thread-safe."""

    def step(self, rows: int, seconds: float, prefill: bool) -> None:
        """A forward pass over `rows` sequences took `seconds`."""

    def state(self, running: int, waiting: int, kv_tokens: int, kv_capacity: int) -> None:
        """After every iteration."""

    def queued(self, seconds: float) -> None:
        """A sequence waited `seconds` before its prefill."""

    def cancelled(self, steps: int) -> None:
        """A cancelled sequence left the batch `steps` forward passes after the cancel."""

    def first_token(self, steps: int) -> None:
        """A sequence got its first token `steps` forward passes after it was submitted."""

    def preempted(self) -> None:
        """A running sequence was evicted to make room (never, see module doc)."""


class PromptPrefill(Protocol):
    """A long prompt being prefilled a chunk at a time."""

    @property
    def remaining(self) -> int: ...


class StepBatch(Protocol):
    """What the loop needs from the model's batched KV cache (`KVBatch`)."""

    @property
    def kv_tokens(self) -> int: ...
    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor: ...
    def begin_prefill(self, prompt: Sequence[int]) -> PromptPrefill: ...
    def prefill_chunk(self, partial: Any, tokens: int) -> torch.Tensor | None: ...
    def step(self, tokens: Sequence[int]) -> torch.Tensor: ...
    def keep(self, rows: Sequence[int]) -> list[int]: ...


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


class Wakeups:
    """The outboxes one iteration filled, woken together when it ends.

    `call_soon_threadsafe` writes to the event loop's self-pipe on every call,
    a wake-up across CPUs: once per stream per step it was 8.7% of the
    inference process's samples (py-spy, 32 streams, bench/transformers_serve.py),
    all of it on the decode loop's thread, between forward passes.
    """

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self._events.setdefault(loop, []).append(event)

    def flush(self) -> None:
        pending, self._events = self._events, {}
        for loop, events in pending.items():
            with contextlib.suppress(RuntimeError):  # the event loop closed under us
                loop.call_soon_threadsafe(_set_all, events)


class Sink(Protocol):
    """Where the loop hands one sequence's text: an `Outbox` in this process,
    or a relay to the serving process (`decode_worker`)."""

    @property
    def streaming(self) -> bool: ...
    def put(self, delta: str, wakeups: Wakeups | None = None) -> None: ...
    def close(self, last: StreamChunk, wakeups: Wakeups | None = None) -> None: ...
    def fail(self, error: BaseException) -> None: ...


class Outbox:
    """Text from the loop's thread to one awaiting request, coalesced."""

    def __init__(self, loop: asyncio.AbstractEventLoop, streaming: bool) -> None:
        self._loop = loop
        self.streaming = streaming
        self._lock = threading.Lock()
        self._parts: list[str] = []
        self._last: StreamChunk | None = None
        self._error: BaseException | None = None
        self._signalled = False
        self._ready = asyncio.Event()

    # -- the loop's thread ------------------------------------------------

    # With `wakeups`, the waiting request is woken when the caller flushes them
    # (once per iteration); without, at once.

    def put(self, delta: str, wakeups: Wakeups | None = None) -> None:
        if delta and self.streaming:
            self._deliver(delta, None, None, wakeups)

    def close(self, last: StreamChunk, wakeups: Wakeups | None = None) -> None:
        self._deliver("", last, None, wakeups)

    def fail(self, error: BaseException) -> None:
        self._deliver("", None, error, None)

    def _deliver(
        self,
        delta: str,
        last: StreamChunk | None,
        error: BaseException | None,
        wakeups: Wakeups | None,
    ) -> None:
        with self._lock:
            if delta:
                self._parts.append(delta)
            self._last = last or self._last
            self._error = error or self._error
            wake, self._signalled = not self._signalled, True
        if not wake:
            return
        if wakeups is not None:
            wakeups.add(self._loop, self._ready)
            return
        with contextlib.suppress(RuntimeError):  # the event loop closed under us
            self._loop.call_soon_threadsafe(self._ready.set)

    # -- the event loop ---------------------------------------------------

    async def next(self) -> StreamChunk:
        """Everything produced since the last call, as one chunk (waits for some)."""
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                if self._parts or self._last is not None:
                    delta = "".join(self._parts)
                    self._parts.clear()
                    last, self._last = self._last, None
                    self._signalled = False
                    if last is not None:
                        return dataclasses.replace(last, delta=delta + last.delta)
                    return StreamChunk(delta)
                self._signalled = False
                self._ready.clear()
            await self._ready.wait()


@dataclasses.dataclass(eq=False, slots=True)
class _Sequence:
    prompt: list[int]
    params: GenerationParams
    tenant: str
    budget: int
    outbox: Sink
    assembler: TextAssembler
    enqueued: float
    deadline: float | None  # time.monotonic
    span_context: trace.SpanContext
    span: trace.Span
    generator: torch.Generator | None = None
    reserved: int = 0
    last_token: int = 0
    cancelled_at: int | None = None  # step count when the caller gave up
    finish: FinishReason | None = None
    first_token_at: float | None = None
    submitted_step: int = 0
    prefill: PromptPrefill | None = None  # while prefilled in chunks
    queued: bool = True  # counted in the queue (`_waiting`): not yet admitted nor cancelled


class Handle:
    """A submitted request, as its caller holds it."""

    __slots__ = ("_scheduler", "_sequence")

    def __init__(self, scheduler: Scheduler, sequence: _Sequence) -> None:
        self._scheduler = scheduler
        self._sequence = sequence

    async def next(self) -> StreamChunk:
        outbox = self._sequence.outbox
        assert isinstance(outbox, Outbox), "a relayed sequence is read where it is relayed"
        return await outbox.next()

    def cancel(self) -> None:
        """The caller gave up: the sequence leaves before the next forward pass."""
        self._scheduler._cancel(self._sequence)


class Scheduler:
    """The one decode loop of a loaded causal LM."""

    def __init__(
        self,
        batch: StepBatch,
        *,
        decode: Callable[[list[int]], str],
        eos_ids: set[int],
        device: str,
        context_length: int | None,
        limits: SchedulerLimits,
        name: str = "model",
        torch_threads: int = 1,
        observer: SchedulerObserver | None = None,
        tracer: trace.Tracer | None = None,
        wakeups: Callable[[], Wakeups] = Wakeups,
    ) -> None:
        self._batch = batch
        self._decode = decode
        self._eos = eos_ids
        self._device = device
        self._context = context_length
        self.limits = limits
        self._name = name
        self._torch_threads = torch_threads
        self._observer = observer or SchedulerObserver()
        self._tracer = tracer or trace.get_tracer(__name__)
        self._wakeups = wakeups
        self._cond = threading.Condition()
        self._queues: dict[str, collections.deque[_Sequence]] = {}
        self._turns: collections.deque[str] = collections.deque()  # tenants with a queue
        self._waiting = 0
        self._running: list[_Sequence] = []
        self._chunking: _Sequence | None = None  # the long prompt being prefilled in chunks
        self._chunk = 0  # its tokens this iteration
        self._reserved = 0
        self._closed = False
        self.stopped_because = ""
        #: Forward passes run since start (prefill and decode).
        self.steps = 0
        #: Tokens generated since start (tests read it).
        self.tokens_generated = 0
        self._thread = threading.Thread(target=self._run, name=f"decode-{name}", daemon=True)
        self._thread.start()

    # -- the event loop's side ---------------------------------------------

    @property
    def active(self) -> int:
        """Sequences queued or running."""
        return self._waiting + len(self._running) + (self._chunking is not None)

    @property
    def running(self) -> int:
        """Sequences in the batch, or being prefilled into it."""
        return len(self._running) + (self._chunking is not None)

    @property
    def kv_tokens(self) -> int:
        return self._batch.kv_tokens

    @property
    def context_length(self) -> int | None:
        return self._context

    @property
    def alive(self) -> bool:
        """False once closed, or after the loop failed (the version is then unhealthy)."""
        return not self._closed

    def submit(
        self,
        prompt: list[int],
        params: GenerationParams,
        *,
        streaming: bool,
        deadline: float | None = None,
        tenant: str | None = None,
        span: trace.Span | None = None,
        sink: Sink | None = None,
    ) -> Handle:
        """Queue a request; its text arrives through the returned handle (or
        `sink`). The tenant and span default to the calling request's."""
        budget, reserved = reservation(len(prompt), params, self._context, self.limits)
        span = span or trace.get_current_span()
        sequence = _Sequence(
            prompt=prompt,
            params=params,
            tenant=request_tenant.get() if tenant is None else tenant,
            budget=budget,
            outbox=sink or Outbox(asyncio.get_running_loop(), streaming),
            assembler=TextAssembler(self._decode, params.stop),
            enqueued=time.perf_counter(),
            deadline=deadline,
            span_context=span.get_span_context(),
            span=span,
            generator=generator_for(params, self._device),
            reserved=reserved,
            submitted_step=self.steps,
        )
        with self._cond:
            if self._closed:
                raise Unavailable(f"{self._name} is unloading")
            if self._waiting >= self.limits.max_queued:
                raise queue_full(self._name, self._waiting, self.limits)
            queue = self._queues.get(sequence.tenant)
            if queue is None:
                queue = self._queues[sequence.tenant] = collections.deque()
                self._turns.append(sequence.tenant)
            queue.append(sequence)
            self._waiting += 1
            self._cond.notify()
        return Handle(self, sequence)

    def _cancel(self, sequence: _Sequence) -> None:
        with self._cond:
            if sequence.cancelled_at is None and sequence.finish is None:
                sequence.cancelled_at = self.steps
                if sequence.queued:  # its place is free now, not at the next iteration
                    sequence.queued = False
                    self._waiting -= 1
                self._cond.notify()

    def close(self) -> None:
        """Stop the loop; every queued or running request fails UNAVAILABLE."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # -- the loop's thread ---------------------------------------------------

    def _run(self) -> None:
        # Per thread under OpenMP: the loop's thread sizes its own pool.
        torch.set_num_threads(self._torch_threads)
        try:
            with torch.inference_mode():
                while self._iterate():
                    pass
        except BaseException as exc:  # a bug or an OOM: fail everyone, don't hang them
            log.exception("decode loop of %s failed", self._name)
            self.stopped_because = f"its decode loop failed ({type(exc).__name__})"
            self._fail_all(Unavailable(f"{self._name} failed: {type(exc).__name__}"))
            return
        self._fail_all(Unavailable(f"{self._name} is unloading"))

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            self._closed = True
            doomed = list(self._running) + [s for q in self._queues.values() for s in q]
            if self._chunking is not None:
                doomed.append(self._chunking)
                self._chunking = None
            self._queues.clear()
            self._turns.clear()
            self._waiting = 0
            self._running = []
        for sequence in doomed:
            sequence.outbox.fail(error)
        self._batch.keep([])

    def _iterate(self) -> bool:
        """One iteration; False when closed."""
        with self._cond:
            while (
                not self._closed
                and not self._running
                and not self._waiting
                and self._chunking is None
            ):
                self._cond.wait()
            if self._closed:
                return False
            expired = self._expire_queued()
            admitted = self._admit()
        for sequence in expired:
            sequence.outbox.fail(DeadlineExceeded("the deadline passed while queued"))
        self._leave_cancelled()
        if self._chunking is not None:
            self._prefill_chunk(self._chunking)
        if admitted:
            self._prefill(admitted)
        if self._running:
            self._decode_step()
        self._observer.state(
            len(self._running), self._waiting, self._batch.kv_tokens, self.limits.max_kv_tokens
        )
        return True

    def _expire_queued(self) -> list[_Sequence]:
        """Queued sequences whose caller gave up or whose deadline passed."""
        now = time.monotonic()
        gone: list[_Sequence] = []
        for tenant, queue in self._queues.items():
            if not any(
                s.cancelled_at is not None or (s.deadline is not None and s.deadline <= now)
                for s in queue
            ):
                continue
            keep = collections.deque[_Sequence]()
            for s in queue:
                if s.cancelled_at is not None:  # uncounted when cancelled
                    s.finish = FinishReason.CANCELLED
                elif s.deadline is not None and s.deadline <= now:
                    s.queued = False
                    self._waiting -= 1
                    gone.append(s)
                else:
                    keep.append(s)
            self._queues[tenant] = keep
        return gone

    def _admit(self) -> list[_Sequence]:
        """Round-robin over tenants, one sequence per turn, while it fits.
        Returns the prompts to prefill whole; a long one becomes the chunked
        prefill (`_chunking`) when none is under way, and sizes this
        iteration's chunk (`_chunk`) from the prefill budget left."""
        limits = self.limits
        admitted: list[_Sequence] = []
        budget = limits.max_prefill_tokens
        chunking = self._chunking
        if chunking is not None and chunking.prefill is not None:
            self._chunk = min(chunking.prefill.remaining, budget)
            budget -= self._chunk
        turns = self._turns
        while (
            turns
            and len(self._running) + len(admitted) + (self._chunking is not None)
            < limits.max_running
        ):
            tenant = turns[0]
            queue = self._queues[tenant]
            if not queue:
                turns.popleft()
                del self._queues[tenant]
                continue
            head = queue[0]
            if self._reserved + head.reserved > limits.max_kv_tokens:
                break
            long = len(head.prompt) > limits.max_prefill_tokens
            if long and (self._chunking is not None or budget <= 0):
                break
            if not long and len(head.prompt) > budget:
                break
            queue.popleft()
            head.queued = False
            self._waiting -= 1
            self._reserved += head.reserved
            if long:
                head.prefill = self._batch.begin_prefill(head.prompt)
                self._chunking, self._chunk = head, budget
                budget = 0
            else:
                budget -= len(head.prompt)
                admitted.append(head)
            turns.rotate(-1)  # this tenant goes to the back of the line
        return admitted

    def _leave_cancelled(self) -> None:
        chunking = self._chunking
        if chunking is not None and chunking.cancelled_at is not None:
            with self._cond:
                self._chunking = None
            chunking.prefill = None  # its partial cache goes with it
            chunking.finish = FinishReason.CANCELLED
            self._observer.cancelled(self.steps - chunking.cancelled_at)
            self._close(chunking)
        gone = [i for i, s in enumerate(self._running) if s.cancelled_at is not None]
        if not gone:
            return
        done = [self._running[i] for i in gone]
        for sequence in done:
            sequence.finish = FinishReason.CANCELLED
            self._observer.cancelled(self.steps - (sequence.cancelled_at or 0))
        self._retain([s for s in self._running if s.finish is None])
        for sequence in done:
            self._close(sequence)

    def _retain(self, keep: list[_Sequence]) -> None:
        """Only `keep` stays running, in the row order the batch chose."""
        running = self._running
        index = {id(s): i for i, s in enumerate(running)}
        order = self._batch.keep([index[id(s)] for s in keep])
        with self._cond:
            self._running = [running[i] for i in order]

    def _forward_span(self, kind: str, sequences: Sequence[_Sequence]) -> trace.Span:
        """A root span for one forward pass, linked to each request it served."""
        links = [trace.Link(s.span_context) for s in sequences if s.span_context.is_valid]
        return self._tracer.start_span(
            f"inference.{kind}",
            context=otel_context.Context(),
            links=links,
            attributes={"batch.rows": len(sequences), "model": self._name},
        )

    def _admitted(self, sequences: list[_Sequence], started: float) -> None:
        for sequence in sequences:
            self._observer.queued(started - sequence.enqueued)
            sequence.span.add_event(
                "scheduler.admitted", {"queue_seconds": started - sequence.enqueued}
            )

    def _prefill_chunk(self, sequence: _Sequence) -> None:
        """The next chunk of the long prompt; on its last, the sequence joins
        the batch with its first token."""
        partial = sequence.prefill
        assert partial is not None
        started = time.perf_counter()
        if partial.remaining == len(sequence.prompt):
            self._admitted([sequence], started)
        span = self._forward_span("prefill", [sequence])
        try:
            logits = self._batch.prefill_chunk(partial, self._chunk)
        finally:
            span.end()
        self.steps += 1
        self._observer.step(1, time.perf_counter() - started, True)
        if logits is None:
            return
        sequence.prefill = None
        with self._cond:
            self._chunking = None
            self._running = [*self._running, sequence]
        self._accept(logits, [sequence])

    def _prefill(self, admitted: list[_Sequence]) -> None:
        started = time.perf_counter()
        self._admitted(admitted, started)
        span = self._forward_span("prefill", admitted)
        try:
            logits = self._batch.prefill([s.prompt for s in admitted])
        finally:
            span.end()
        self.steps += 1
        self._observer.step(len(admitted), time.perf_counter() - started, True)
        with self._cond:
            self._running = self._running + admitted
        self._accept(logits, admitted)

    def _decode_step(self) -> None:
        started = time.perf_counter()
        running = self._running
        span = self._forward_span("decode", running)
        try:
            logits = self._batch.step([s.last_token for s in running])
        finally:
            span.end()
        self.steps += 1
        self._observer.step(len(running), time.perf_counter() - started, False)
        self._accept(logits, running)

    def _accept(self, logits: torch.Tensor, sequences: list[_Sequence]) -> None:
        """Sample the next token of `sequences` (one logits row each), hand
        out their text, and let the finished ones leave."""
        tokens = sample(logits, [s.params for s in sequences], [s.generator for s in sequences])
        now = time.perf_counter()
        done: list[_Sequence] = []
        wakeups = self._wakeups()
        try:
            for sequence, token in zip(sequences, tokens, strict=True):
                if sequence.first_token_at is None:
                    sequence.first_token_at = now
                    self._observer.first_token(self.steps - sequence.submitted_step)
                    sequence.span.add_event("scheduler.first_token")
                if token in self._eos:
                    sequence.finish = FinishReason.EOS
                else:
                    self.tokens_generated += 1
                    assembler = sequence.assembler
                    sequence.outbox.put(assembler.push(token), wakeups)
                    sequence.last_token = token
                    if assembler.stopped:
                        sequence.finish = FinishReason.STOP_SEQUENCE
                    elif assembler.token_count >= sequence.budget:
                        sequence.finish = FinishReason.LENGTH
                if sequence.finish is not None:
                    done.append(sequence)
            if done:  # memory first: a caller that has its answer finds it freed
                self._retain([s for s in self._running if s.finish is None])
                for sequence in done:
                    self._close(sequence, wakeups)
        finally:
            # Even on an error: an outbox signalled but never woken would hang.
            wakeups.flush()

    def _close(self, sequence: _Sequence, wakeups: Wakeups | None = None) -> None:
        """Hand out the last chunk and release the sequence's reservation."""
        assembler = sequence.assembler
        tail = assembler.finish() if sequence.finish is not FinishReason.STOP_SEQUENCE else ""
        self._reserved -= sequence.reserved
        sequence.span.add_event(
            "scheduler.finished",
            {
                "finish_reason": str(sequence.finish.value if sequence.finish else ""),
                "completion_tokens": assembler.token_count,
            },
        )
        outbox = sequence.outbox
        outbox.close(
            StreamChunk(
                tail if outbox.streaming else assembler.text,
                finish_reason=sequence.finish,
                prompt_tokens=len(sequence.prompt),
                completion_tokens=assembler.token_count,
            ),
            wakeups,
        )
