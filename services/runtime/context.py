"""Per-request context that outlives one function: request id and deadline.

The server's per-RPC wrapper sets these for each inbound RPC and the
client channel reads them, so a call made while serving a request carries the
same request id and a deadline no later than the caller's.
"""

from __future__ import annotations

import contextvars
import random
import time

REQUEST_ID_KEY = "x-request-id"
#: The module's generator: reseeded in a forked child, unlike a private Random().
_random_bits = random.getrandbits

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
#: Absolute deadline (time.monotonic seconds) of the inbound RPC, if it had one.
deadline_var: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "deadline", default=None
)


def new_request_id() -> str:
    """32 random hex digits (an id, not a secret: no need for the OS's entropy per call)."""
    return f"{_random_bits(128):032x}"


def remaining_time() -> float | None:
    """Seconds left before the inbound RPC's deadline, or None without one."""
    deadline = deadline_var.get()
    return None if deadline is None else deadline - time.monotonic()
