"""Liveness: a process whose event loop stops turning exits, so it gets restarted.

Everything a Lattice server does runs on one asyncio loop; if something blocks
it (a stuck call into native code, a deadlock), the process still holds its
port and accepts connections but never answers, and nothing restarts it. The
loop stamps a heartbeat every `interval`; a daemon thread checks the stamp and,
once it is `stall_seconds` old, writes every thread's stack to stderr (to see
what hung) and exits with `EXIT_STALLED`, for `lattice up`'s supervisor or
Kubernetes to restart it. (A stopped process, SIGSTOP, cannot act on its own:
the gateway's replica polls catch that one.)
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: The exit status of a process the watchdog ended (EX_SOFTWARE).
EXIT_STALLED = 70


def _exit_stalled(stalled_for: float) -> None:
    log.critical("event loop stalled for %.1fs: exiting so that it is restarted", stalled_for)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    os._exit(EXIT_STALLED)


class LoopWatchdog:
    """Calls `on_stall` (default: dump stacks and exit) when `loop` stalls."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        stall_seconds: float,
        *,
        on_stall: Callable[[float], None] = _exit_stalled,
    ) -> None:
        self._loop = loop
        self._stall = stall_seconds
        self._interval = max(0.05, min(1.0, stall_seconds / 4))
        self._on_stall = on_stall
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self._handle: asyncio.TimerHandle | None = None

    def _beat(self) -> None:
        self._last = time.monotonic()
        self._handle = self._loop.call_later(self._interval, self._beat)

    def _watch(self) -> None:
        while not self._stopped.wait(self._interval):
            stalled_for = time.monotonic() - self._last
            if stalled_for >= self._stall:
                self._on_stall(stalled_for)
                return

    def start(self) -> None:
        """Start beating (on the loop) and watching (in a daemon thread)."""
        self._last = time.monotonic()
        self._loop.call_soon_threadsafe(self._beat)
        threading.Thread(target=self._watch, name="loop-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()
