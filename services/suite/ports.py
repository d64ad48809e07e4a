"""Free loopback ports, for processes that cannot bind port 0 and report back."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

#: Every service binds its metrics here, above its own port.
METRICS_OFFSET = 1000
#: The lowest port handed out (below it: well-known and registered services).
LOWEST = 10000

_lock = threading.Lock()
_handed_out: set[int] = set()


def ephemeral_low() -> int:
    """Where the kernel starts picking ports for `bind(0)` and outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port free now, and its metrics port (+1000) too, chosen below the
    kernel's ephemeral range: between this call and the child's bind, no
    `bind(0)` or outgoing connection can be given it. (An ephemeral port was
    once handed to a server binding port 0 in between, and a chaos suite's
    gateway then reached that server instead of inference.) Never the same
    port twice in one process."""
    top = ephemeral_low() - METRICS_OFFSET - 1
    with _lock:
        for _ in range(500 if top > LOWEST else 0):
            port = random.randint(LOWEST, top)
            if port in _handed_out:
                continue
            if _bindable(port) and _bindable(port + METRICS_OFFSET):
                _handed_out.add(port)
                return port
        while True:  # no room below the ephemeral range on this host
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
