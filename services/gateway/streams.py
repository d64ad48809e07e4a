"""Concurrent streams per tenant: one tenant's long streams cannot take every slot.

Counted per gateway replica (streams are held by a replica, unlike quotas,
which are windows over time and live in Redis). Both fronts share it: the
gRPC GenerateStream and the HTTP SSE streams draw on the same slots.
"""

from __future__ import annotations

import collections

from lattice.errors import ResourceExhausted


class StreamSlots:
    """At most `limit` open streams per tenant (0 = unlimited)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: collections.Counter[str] = collections.Counter()

    def acquire(self, tenant: str) -> None:
        """Take a slot, or RESOURCE_EXHAUSTED when the tenant has none left."""
        if self.limit and self._open[tenant] >= self.limit:
            raise ResourceExhausted(
                f"tenant {tenant!r} already has {self.limit} streams open; "
                "close one or retry shortly",
                retry_after=1.0,
                subject=f"tenant:{tenant}",
                quota="concurrent_streams",
            )
        self._open[tenant] += 1

    def release(self, tenant: str) -> None:
        self._open[tenant] -= 1
        if self._open[tenant] <= 0:
            del self._open[tenant]

    def open(self, tenant: str) -> int:
        return self._open[tenant]
