"""Keep freed host memory in the worker's heap instead of handing it back each step.

A CPU training step allocates and frees the same large buffers every time
(logits, their gradient, attention scores). glibc serves blocks above its
mmap threshold (128 KiB at start, raised on the fly to at most 32 MiB) with
fresh `mmap`s and gives them back with `munmap` on free; it also trims the
heap top once a few MiB are free. Either way the next step touches new pages
and the kernel zero-fills each one: on this machine a 4-layer GPT-2 step took
about 10,000 minor page faults (~40 MiB) and lost 10-20% of its throughput to
them, varying from process to process with glibc's adaptive threshold.

`retain` (the default) turns mmap-per-block off and trimming off, so the heap
grows to the step's peak once and is reused: a worker's memory stays at its
peak, as a GPU caching allocator's does. `system` leaves glibc as it is. Other
C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

RETAIN = "retain"
SYSTEM = "system"
CHOICES = (RETAIN, SYSTEM)

# mallopt(3) parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Largest value glibc accepts for M_TRIM_THRESHOLD on every platform (an int).
_NEVER = 2**31 - 1


def apply(mode: str) -> str:
    """Configure the process allocator; return what is in effect (for the job log)."""
    if mode not in CHOICES:
        raise ValueError(f"allocator must be one of {', '.join(CHOICES)}, not {mode!r}")
    if mode == SYSTEM:
        return SYSTEM
    if platform.libc_ver()[0] != "glibc":
        return f"{SYSTEM} (not glibc)"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if libc.mallopt(_M_MMAP_MAX, 0) != 1 or libc.mallopt(_M_TRIM_THRESHOLD, _NEVER) != 1:
        return f"{SYSTEM} (mallopt refused)"
    return RETAIN
