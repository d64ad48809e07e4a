"""Which versions the inference replicas can serve right now, as they report it.

The registry says which versions are online; only the replicas know whether
a version actually loaded. `ReplicaStates` polls each replica's
ListLoadedModels in the background and keeps the union of versions reported
READY, so the router can leave out a version that failed to load (a bad
canary) or is still loading, instead of sending it a share of the traffic
that would fail. With no report at all (replicas not polled yet, or none
answering) nothing is filtered: the replicas then decide themselves.

The same polls are the gateway's liveness check of each replica: one that
misses `UNRESPONSIVE_AFTER` polls in a row (a hung or SIGSTOPped process
still accepts connections but never answers) is taken out of rotation, so
callers get a prompt UNAVAILABLE with RetryInfo, or another replica, instead
of waiting out their deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc
from grpc import aio

from lattice.v1 import inference_pb2
from services.gateway.upstreams import UNRESPONSIVE_AFTER, Replica, ReplicaPool

log = logging.getLogger(__name__)

_READY = inference_pb2.LOADED_MODEL_STATE_READY
#: Poll outcomes that mean the replica did not answer at all (dead, hung, unreachable).
_NO_ANSWER = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ReplicaStates:
    """The versions READY on at least one replica, refreshed every `interval` seconds."""

    def __init__(self, pool: ReplicaPool, *, interval: float = 1.0, timeout: float = 2.0) -> None:
        self._pool = pool
        self._interval = interval
        self._timeout = timeout
        self._reports: dict[str, frozenset[tuple[str, int]]] = {}
        self._ready: frozenset[tuple[str, int]] = frozenset()
        self._task: asyncio.Task[None] | None = None

    def ready_versions(self, name: str) -> frozenset[int] | None:
        """The versions of `name` some replica reports READY; None when no replica
        has reported (nothing known: route by the registry alone)."""
        if not self._reports:
            return None
        return frozenset(version for model, version in self._ready if model == name)

    async def poll_once(self) -> None:
        await asyncio.gather(*(self._poll(r) for r in self._pool.replicas))
        self._ready = frozenset().union(*self._reports.values())

    async def _poll(self, replica: Replica) -> None:
        try:
            answer = await replica.stub.ListLoadedModels(
                inference_pb2.ListLoadedModelsRequest(), timeout=self._timeout
            )
        except aio.AioRpcError as error:
            self._reports.pop(replica.address, None)  # unknown: it no longer counts
            if error.code() not in _NO_ANSWER:
                replica.missed_polls = 0  # it answered (refused, say): alive, state unknown
                return
            replica.missed_polls += 1
            if replica.missed_polls == UNRESPONSIVE_AFTER:
                log.warning(
                    "inference replica %s does not answer: out of rotation", replica.address
                )
            return
        if replica.unresponsive:
            log.info("inference replica %s answers again: back in rotation", replica.address)
        replica.missed_polls = 0
        self._reports[replica.address] = frozenset(
            (m.model_name, m.version) for m in answer.models if m.state == _READY
        )

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("polling the inference replicas failed")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        if self._task is None and self._interval > 0:
            self._task = asyncio.create_task(self._run(), name="replica-states")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
