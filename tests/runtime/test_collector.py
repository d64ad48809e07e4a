"""A service process settles Python's garbage collector once it serves: startup
objects frozen out of every pass, the young generation collected less often."""

from __future__ import annotations

import gc

from services.registry.server import RegistrySettings
from services.registry.server import build_server as build_registry
from services.runtime.collector import YOUNG_GC_THRESHOLD, settle_the_collector
from services.runtime.entrypoint import build_process_server


async def test_startup_objects_are_frozen_and_young_passes_are_rarer():
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        await settle_the_collector()
        assert gc.get_freeze_count() > 10_000  # what the imports and startup built
        assert gc.get_threshold() == (YOUNG_GC_THRESHOLD, *before[1:])
        garbage: list[object] = []
        garbage.append(garbage)  # a cycle made after startup is still collectable
        del garbage
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


async def test_the_process_server_settles_the_collector_once_it_serves(tmp_path):
    """What `run_service` runs; `build_server` alone (tests: several servers in
    one process) leaves the collector alone."""
    settings = RegistrySettings(port=0, data_dir=tmp_path, grace_seconds=0.2, log_json=False)
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        registry = await build_process_server(build_registry, settings)
        assert gc.get_freeze_count() == 0
        await registry.start()
        try:
            assert gc.get_freeze_count() > 10_000
            assert gc.get_threshold()[0] == YOUNG_GC_THRESHOLD
        finally:
            await registry.stop()
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
