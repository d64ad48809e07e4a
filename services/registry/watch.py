"""Fan-out of registry changes to Watch subscribers, with a bounded replay log.

Every committed change is published as (revision, events). The hub keeps the
last `retain_revisions` revisions so a subscriber that reconnects from
revision R gets exactly the events after R; older than that, it gets a RESET
and a snapshot. Each subscriber has its own bounded queue: a slow one never
blocks the publisher or the others; if its queue overflows it is switched
to a fresh RESET + snapshot the next time it reads. A subscriber gets only
the events its caller may see (its tenant's objects; admins get all), in the
backlog, the snapshot and live alike.

Everything here runs on the event loop and never awaits while it reads the
log and registers a subscriber, so no event is missed or sent twice.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Iterable, Sequence

from prometheus_client import Counter, Gauge

from lattice.v1 import registry_pb2
from services.registry.ownership import event_visible
from services.runtime.identity import Caller
from services.runtime.registry_view import RegistryState, event_model_name

EventType = registry_pb2.WatchEventType
Batch = tuple[int, Sequence[registry_pb2.WatchResponse]]
_CLOSED = object()


class _Subscriber:
    def __init__(self, model_names: frozenset[str], queue_size: int, caller: Caller) -> None:
        self.model_names = model_names
        self.caller = caller
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.needs_reset = False

    def wants(self, event: registry_pb2.WatchResponse) -> bool:
        if event.WhichOneof("object") is None:  # RESET, SYNCED
            return True
        if self.model_names and event_model_name(event) not in self.model_names:
            return False
        return event_visible(self.caller, event)

    def snapshot(self, state: RegistryState) -> list[registry_pb2.WatchResponse]:
        return [e for e in state.snapshot_events(self.model_names) if self.wants(e)]


class WatchHub:
    """Publishes changes to subscribers and replays retained ones."""

    def __init__(
        self,
        state: Callable[[], RegistryState],
        *,
        retain_revisions: int = 10_000,
        queue_size: int = 1024,
        subscribers_gauge: Gauge | None = None,
        resets: Counter | None = None,
    ) -> None:
        self._state = state
        self._retain = max(1, retain_revisions)
        self._queue_size = max(1, queue_size)
        self._log: collections.deque[Batch] = collections.deque()
        #: Every revision above this one is in the log.
        self._floor = 0
        self._subscribers: set[_Subscriber] = set()
        self._gauge = subscribers_gauge
        self._resets = resets
        self._closed = False

    def load(self, current_revision: int, log: Iterable[Batch]) -> None:
        """Seed the log from the store at start-up."""
        self._log = collections.deque(log)
        self._floor = self._log[0][0] - 1 if self._log else current_revision
        self._trim()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    @property
    def oldest_replayable(self) -> int:
        """The lowest from_revision that can be served without a snapshot."""
        return self._floor

    def publish(self, revision: int, events: Sequence[registry_pb2.WatchResponse]) -> None:
        """Record a committed change and hand it to every subscriber."""
        self._log.append((revision, events))
        self._trim()
        for subscriber in list(self._subscribers):
            if subscriber.needs_reset:
                continue
            for event in events:
                if not subscriber.wants(event):
                    continue
                try:
                    subscriber.queue.put_nowait(event)
                except asyncio.QueueFull:
                    self._overflow(subscriber)
                    break

    def _overflow(self, subscriber: _Subscriber) -> None:
        subscriber.needs_reset = True
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(None)  # wake it up
        if self._resets is not None:
            self._resets.inc()

    def _trim(self) -> None:
        while len(self._log) > self._retain:
            self._floor = self._log.popleft()[0]

    def reopen(self) -> None:
        """Accept long-lived streams again after `close`."""
        self._closed = False

    def close(self) -> None:
        """End every stream (the server is draining); new ones end after SYNCED."""
        self._closed = True
        for subscriber in list(self._subscribers):
            while not subscriber.queue.empty():
                subscriber.queue.get_nowait()
            subscriber.queue.put_nowait(_CLOSED)

    async def subscribe(
        self, from_revision: int, model_names: Sequence[str], caller: Caller
    ) -> AsyncIterator[registry_pb2.WatchResponse]:
        """Events after `from_revision` (or RESET + snapshot), SYNCED, then live ones."""
        subscriber = _Subscriber(frozenset(model_names), self._queue_size, caller)
        # No await between reading the backlog and registering: nothing slips between.
        backlog = self._initial(subscriber, from_revision)
        self._subscribers.add(subscriber)
        self._update_gauge()
        try:
            for event in backlog:
                yield event
            while not self._closed:
                item = await subscriber.queue.get()
                if item is _CLOSED:
                    return
                if subscriber.needs_reset:
                    subscriber.needs_reset = False
                    while not subscriber.queue.empty():
                        subscriber.queue.get_nowait()
                    for event in subscriber.snapshot(self._state()):
                        yield event
                    continue
                if item is not None:
                    yield item
        finally:
            self._subscribers.discard(subscriber)
            self._update_gauge()

    def _initial(
        self, subscriber: _Subscriber, from_revision: int
    ) -> list[registry_pb2.WatchResponse]:
        state = self._state()
        if from_revision <= 0 or from_revision < self._floor or from_revision > state.revision:
            return subscriber.snapshot(state)
        events = [
            event
            for revision, batch in self._log
            if revision > from_revision
            for event in batch
            if subscriber.wants(event)
        ]
        events.append(
            registry_pb2.WatchResponse(
                type=EventType.WATCH_EVENT_TYPE_SYNCED, revision=state.revision
            )
        )
        return events

    def _update_gauge(self) -> None:
        if self._gauge is not None:
            self._gauge.set(len(self._subscribers))
