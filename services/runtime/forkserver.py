"""This process's forkserver, shared by every service that starts children from it.

A child forked from a forkserver skips the imports the forkserver made once
(torch and transformers take seconds per fresh interpreter). multiprocessing
keeps one forkserver per process, so each service adds the modules its
children need (`context(preload)`); the forkserver imports whatever had been
asked for when it started. Where services share a process (tests, an
embedded suite), a later request only costs that service's children the
imports it missed. The forkserver exits with this process.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import threading
from collections.abc import Sequence
from multiprocessing.context import ForkServerContext

_lock = threading.Lock()
_preload: list[str] = []


def context(preload: Sequence[str] = ()) -> ForkServerContext:
    """The forkserver context, with `preload` added to what it imports at start."""
    with _lock:
        _preload.extend(module for module in preload if module not in _preload)
        forkserver = multiprocessing.get_context("forkserver")
        forkserver.set_forkserver_preload(list(_preload))
    return forkserver


def start(preload: Sequence[str] = ()) -> None:
    """Start the forkserver now, in the background (its imports take seconds;
    services start it at boot so that their first child does not pay them)."""
    context(preload)
    threading.Thread(
        target=multiprocessing.forkserver.ensure_running, name="forkserver-start", daemon=True
    ).start()
