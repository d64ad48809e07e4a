"""Python's garbage collector, settled once a service process serves."""

from __future__ import annotations

import gc

#: Tracked objects allocated (net) before a young collection; Python's default is 700.
YOUNG_GC_THRESHOLD = 7000


async def settle_the_collector() -> None:
    """Take what startup built out of the garbage collector's way, and collect
    the young generation less often.

    Startup builds ~80k long-lived objects (modules, stubs, routes, the app)
    that every pass of the oldest generation walked: measured in the gateway
    under bursts of 32 streams (`lattice up`, 64 tokens each), one such pass
    in a burst took 55 ms (up to 69 ms), a pause every stream in flight waits
    out. Frozen (after a collection, so no startup garbage is kept), they are
    never walked again. The young generation filled up ~5 times a burst with
    objects of the streams in flight, each pass 0.2-0.4 ms; at 7000 no pass
    ran in 20 bursts. Cycles still get collected, a little later.

    Once per process: `run_service` does it when the server has started, not
    `build_server` (tests run several servers in one process)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, older, oldest)
