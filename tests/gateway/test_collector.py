"""The gateway process settles Python's garbage collector once it serves: startup
objects frozen out of every pass, the young generation collected less often."""

from __future__ import annotations

import gc

from services.gateway import server


async def test_startup_objects_are_frozen_and_young_passes_are_rarer():
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        await server._settle_the_collector()
        assert gc.get_freeze_count() > 10_000  # what the imports and startup built
        assert gc.get_threshold() == (server._YOUNG_GC_THRESHOLD, *before[1:])
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle made after startup is still collectable
        del garbage
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_the_process_server_settles_the_collector_once_it_serves(stack):
    """What `main` runs; `build_server` (tests: several servers in one process)
    leaves the collector alone."""
    await stack.start_registry()
    await stack.start_inference(1)
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        gateway = await server._build_process_server(stack.settings())
        assert gc.get_freeze_count() == 0
        await gateway.start()
        stack.gateways.append(gateway)
        assert gc.get_freeze_count() > 10_000
        assert gc.get_threshold()[0] == server._YOUNG_GC_THRESHOLD
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
