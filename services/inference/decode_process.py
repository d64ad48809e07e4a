"""A causal LM's decode loop in a process of its own (`decode_worker`), as the
serving process holds it: the same surface as the in-process `Scheduler`.

This side keeps what a caller must hear at once: INVALID_ARGUMENT for a
request that can never fit, RESOURCE_EXHAUSTED beyond the queue bound (from
the queue length the loop last reported, plus what was sent since, so it
errs towards refusing). One reader thread takes the loop's messages and fills
each request's `Outbox`, waking the event loop once per message.

Processes come from a forkserver that imported torch and transformers once,
so a model's decode process starts in about the time its weights take to
load. The process exits when closed, and on its own when this one is gone
(its pipe closes; checked by SIGKILLing a serving process). As with every
start method but fork, a script (not `python -m`) that builds one must guard
its entry point with `if __name__ == "__main__":`: multiprocessing runs the
main script again in the child.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import threading
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import Any

from opentelemetry import trace

from lattice.errors import FailedPrecondition, Unavailable
from services.inference import decode_worker
from services.inference.backends import GenerationParams, StreamChunk, request_tenant
from services.inference.decode_worker import WorkerSpec
from services.inference.scheduler import (
    Outbox,
    SchedulerLimits,
    SchedulerObserver,
    Wakeups,
    queue_full,
    reservation,
)
from services.runtime import forkserver

log = logging.getLogger(__name__)

#: How long a closing decode process may take to fail its requests and exit.
CLOSE_SECONDS = 10.0


#: What the forkserver imports once for every decode process it forks: the
#: worker, transformers' model machinery and GPT-2's modeling code (the causal
#: family our trainer builds): that import alone took 2 s in each fresh process.
PRELOAD = (
    decode_worker.__name__,
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.modeling_utils",
    "transformers.models.gpt2.modeling_gpt2",
)


#: Set when the interpreter exits: multiprocessing then terminates decode
#: processes that were never closed, which is no loss worth reporting.
_exiting = False


def _note_exit() -> None:
    global _exiting
    _exiting = True


# Registered after multiprocessing's own exit hook (imported above), so it runs first.
atexit.register(_note_exit)


def _processes() -> ForkServerContext:
    return forkserver.context(PRELOAD)


def start_forkserver() -> None:
    """Start the forkserver now, in the background (its imports take seconds;
    the service starts it at boot so that the first model load does not pay them)."""
    forkserver.start(PRELOAD)


@dataclasses.dataclass(eq=False, slots=True)
class _Request:
    outbox: Outbox
    span: trace.Span


class RemoteHandle:
    """A request submitted to the decode process."""

    __slots__ = ("_outbox", "_process", "_request")

    def __init__(self, process: DecodeProcess, request: int, outbox: Outbox) -> None:
        self._process = process
        self._request = request
        self._outbox = outbox

    async def next(self) -> StreamChunk:
        return await self._outbox.next()

    def cancel(self) -> None:
        self._process._cancel(self._request)


class DecodeProcess:
    """One model's decode loop, running in a child process."""

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        observer: SchedulerObserver | None = None,
    ) -> None:
        """Start the process and wait until the model is loaded (blocking:
        call it off the event loop). A model that fails to load raises
        FAILED_PRECONDITION with the decode process's reason."""
        self._name = spec.options.name
        self._observer = observer or SchedulerObserver()
        ours, theirs = multiprocessing.Pipe()
        self._conn: Connection = ours
        self._send_lock = threading.Lock()
        self._process = _processes().Process(
            target=decode_worker.serve,
            args=(theirs, spec),
            name=f"decode-{self._name}",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        self._requests: dict[int, _Request] = {}
        self._ids = itertools.count()
        self._running = 0
        self._alive = False
        self._closing = False
        #: Why the process stopped on its own ("" while it runs, or when closed).
        self.stopped_because = ""
        #: Forward passes and tokens since start, as last reported (tests read them).
        self.steps = 0
        self.tokens_generated = 0
        self.kv_tokens = 0
        try:
            hello = self._conn.recv()
        except (EOFError, OSError):
            hello = ("failed", "the decode process exited while loading the model")
        if hello[0] != "ready":
            self._stop()
            raise FailedPrecondition(hello[1])
        self.limits: SchedulerLimits = hello[1]
        self._context: int | None = hello[2]
        self._alive = True
        self._reader = threading.Thread(target=self._read, name=f"relay-{self._name}", daemon=True)
        self._reader.start()

    # -- the event loop's side -------------------------------------------

    @property
    def alive(self) -> bool:
        """False once closed, or after the decode process died."""
        return self._alive

    @property
    def active(self) -> int:
        """Requests queued or running."""
        return len(self._requests)

    @property
    def context_length(self) -> int | None:
        return self._context

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def submit(
        self,
        prompt: list[int],
        params: GenerationParams,
        *,
        streaming: bool,
        deadline: float | None = None,
    ) -> RemoteHandle:
        """Queue a request in the decode process; its text arrives through the handle."""
        reservation(len(prompt), params, self._context, self.limits)
        if not self._alive:
            raise Unavailable(f"{self._name} is unloading")
        waiting = len(self._requests) - self._running
        if waiting >= self.limits.max_queued:
            raise queue_full(self._name, waiting, self.limits)
        span = trace.get_current_span()
        context = span.get_span_context()
        trace_ids = (
            (context.trace_id, context.span_id, int(context.trace_flags))
            if context.is_valid
            else None
        )
        request = next(self._ids)
        outbox = Outbox(asyncio.get_running_loop(), streaming)
        self._requests[request] = _Request(outbox, span)
        command = (
            "submit",
            request,
            prompt,
            params,
            streaming,
            deadline,
            request_tenant.get(),
            trace_ids,
        )
        if not self._send(command):
            self._requests.pop(request, None)
            raise Unavailable(f"{self._name} is unloading")
        return RemoteHandle(self, request, outbox)

    def _cancel(self, request: int) -> None:
        # Nobody reads a cancelled request's outbox again, and a sequence
        # cancelled while queued leaves without a word from the loop.
        if self._requests.pop(request, None) is not None:
            self._send(("cancel", request))

    def _send(self, command: tuple[Any, ...]) -> bool:
        with self._send_lock:
            try:
                self._conn.send(command)
            except (OSError, ValueError):  # the process died, or we closed the pipe
                return False
        return True

    def close(self) -> None:
        """Stop the decode process; every queued or running request fails
        UNAVAILABLE (blocking: call it off the event loop)."""
        self._closing = True
        self._send(("close",))
        self._process.join(CLOSE_SECONDS)
        self._stop()
        self._reader.join(CLOSE_SECONDS)

    def _stop(self) -> None:
        if self._process.is_alive():
            self._process.kill()
            self._process.join(CLOSE_SECONDS)
        with self._send_lock:
            self._conn.close()

    # -- the reader thread -----------------------------------------------

    def _read(self) -> None:
        try:
            while True:
                entries = self._conn.recv()
                wakeups = Wakeups()
                try:
                    for entry in entries:
                        self._take(entry, wakeups)
                finally:
                    wakeups.flush()
        except (EOFError, OSError):
            pass
        except Exception:  # a bug here must not hang every request
            log.exception("relay from the decode process of %s failed", self._name)
        finally:
            self._alive = False
            lost = Unavailable(f"{self._name}: its decode process stopped; retry")
            for request in list(self._requests.values()):
                request.outbox.fail(lost)
            self._requests.clear()
            if self._process.is_alive():
                with contextlib.suppress(Exception):
                    self._process.kill()
            self._process.join(CLOSE_SECONDS)
            if not (self._closing or _exiting):
                self.stopped_because = (
                    f"its decode process exited (exit code {self._process.exitcode})"
                )
                log.error("%s: %s", self._name, self.stopped_because)

    def _take(self, entry: tuple[Any, ...], wakeups: Wakeups) -> None:
        tag = entry[0]
        if tag == decode_worker.TEXT:
            request = self._requests.get(entry[1])
            if request is not None:
                request.outbox.put(entry[2], wakeups)
        elif tag == decode_worker.CLOSE:
            request = self._requests.pop(entry[1], None)
            if request is not None:
                request.outbox.close(entry[2], wakeups)
        elif tag == decode_worker.FAIL:
            request = self._requests.pop(entry[1], None)
            if request is not None:
                request.outbox.fail(decode_worker.decode_error(entry[2]))
        elif tag == decode_worker.EVENT:
            request = self._requests.get(entry[1])
            if request is not None:
                request.span.add_event(entry[2], entry[3])
        elif tag == decode_worker.OBSERVE:
            getattr(self._observer, entry[1])(*entry[2])
        elif tag == decode_worker.COUNTS:
            _, self.steps, self.tokens_generated, self.kv_tokens, self._running = entry
        elif tag == decode_worker.STATE:
            self._observer.state(*entry[1:])
