"""Runs the four services (and Redis) as child processes and keeps them alive.

`lattice up` uses this: each service is `python -m services.<name>` in its
own process; a child that dies is reported and restarted with exponential
backoff, and reported again once its probe says it is healthy (a health
line); on stop every child gets SIGTERM (so it drains), then SIGKILL after
its grace period. Children also get SIGTERM from the kernel if this process
dies (PR_SET_PDEATHSIG), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclasses.dataclass
class ChildSpec:
    """One service to run: its name, address and command line."""

    name: str
    address: str
    argv: Sequence[str]
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Append the child's stdout and stderr here; None = inherit the terminal.
    log_path: Path | None = None
    #: TLS for the health checks (None = plaintext).
    credentials: grpc.ChannelCredentials | None = None
    #: Waits until the child at `address` is healthy (address, monotonic deadline) and
    #: returns when it was; None = the gRPC health check (`wait_serving`).
    probe: Callable[[str, float], Awaitable[float]] | None = None

    async def wait_healthy(self, deadline: float) -> float:
        if self.probe is not None:
            return await self.probe(self.address, deadline)
        return await wait_serving(self.address, deadline, self.credentials)


@dataclasses.dataclass
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0


class Supervisor:
    """Starts children, restarts the ones that die, and stops them all."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        grace_seconds: float = 10.0,
        max_backoff: float = 30.0,
        report: Callable[[str], None] = print,
    ) -> None:
        self._children = [_Child(spec) for spec in specs]
        self._grace = grace_seconds
        self._max_backoff = max_backoff
        self._report = report
        self._stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []

    @property
    def pids(self) -> dict[str, int]:
        return {c.spec.name: c.process.pid for c in self._children if c.process is not None}

    async def start(self) -> None:
        for child in self._children:
            await self._spawn(child)
        self._watchers = [asyncio.create_task(self._watch(c)) for c in self._children]

    async def wait_healthy(self, timeout: float) -> dict[str, float]:
        """Wait until every child answers SERVING; returns seconds-to-ready by name."""
        started = time.monotonic()
        results = await asyncio.gather(
            *(c.spec.wait_healthy(started + timeout) for c in self._children)
        )
        return {c.spec.name: t - started for c, t in zip(self._children, results, strict=True)}

    async def _spawn(self, child: _Child) -> None:
        env = {**os.environ, **child.spec.env}
        log_path = child.spec.log_path
        if log_path is None:
            child.process = await asyncio.create_subprocess_exec(
                *child.spec.argv, env=env, preexec_fn=_die_with_parent
            )
        else:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("ab") as log_file:  # the child keeps its own descriptor
                child.process = await asyncio.create_subprocess_exec(
                    *child.spec.argv,
                    env=env,
                    preexec_fn=_die_with_parent,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                )
        child.started_at = time.monotonic()

    async def _watch(self, child: _Child) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - child.started_at > 60:
                backoff = 0.5  # it ran fine for a while: start the backoff over
            self._report(f"{child.spec.name} exited with code {code}; restarting in {backoff:.1f}s")
            try:
                await asyncio.wait_for(self._stopping.wait(), backoff)
                return
            except TimeoutError:
                pass
            child.restarts += 1
            await self._spawn(child)
            backoff = min(backoff * 2, self._max_backoff)
            await self._report_health(child)

    async def _report_health(self, child: _Child) -> None:
        """The health line after a restart: healthy again, or still not after a minute."""
        started = time.monotonic()
        assert child.process is not None
        healthy = asyncio.ensure_future(child.spec.wait_healthy(started + 60))
        exited = asyncio.ensure_future(child.process.wait())
        try:
            await asyncio.wait({healthy, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
            # A cancelled task is not done until it has run once more, so decide
            # here, not by asking `healthy` afterwards.
            died_again = not healthy.done()
            if died_again:
                healthy.cancel()  # the watch loop reports that
        if died_again or healthy.cancelled():
            return
        if healthy.exception() is not None:
            self._report(f"{child.spec.name} is not healthy a minute after its restart")
            return
        ready = healthy.result()
        self._report(
            f"{child.spec.name} is healthy again ({ready - started:.1f}s after restart "
            f"{child.restarts})"
        )

    async def stop(self) -> None:
        """SIGTERM every child (they drain), SIGKILL whatever outlives the grace period."""
        self._stopping.set()
        running = [
            c.process
            for c in self._children
            if c.process is not None and c.process.returncode is None
        ]
        for process in running:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), self._grace + 2)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    process.kill()
            await asyncio.gather(*(p.wait() for p in running))
        for task in self._watchers:
            task.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


def _health_channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


async def wait_serving(
    address: str, deadline: float, credentials: grpc.ChannelCredentials | None = None
) -> float:
    """Poll grpc.health.v1 until SERVING; returns the monotonic time it was."""
    async with _health_channel(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic()
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} did not become healthy in time")
            await asyncio.sleep(0.1)


def service_argv(name: str, *args: str) -> list[str]:
    """The command line that runs one service with this interpreter."""
    return [sys.executable, "-m", f"services.{name}", *args]
