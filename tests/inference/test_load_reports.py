"""A replica reports each change of a version's fate to the registry's deployment history.

Real registry and inference (tiny torch models): a stored artifact with a flipped
byte fails to load and is recorded once, however often the replica retries; once
the bytes are repaired, the retry loads it and a VERSION_LOADED entry follows.
"""

from __future__ import annotations

import asyncio

from lattice.v1 import registry_pb2
from services.inference.serving import VersionState
from services.suite.embedded import deploy_lm

FAILED = registry_pb2.DEPLOYMENT_EVENT_KIND_VERSION_LOAD_FAILED
LOADED = registry_pb2.DEPLOYMENT_EVENT_KIND_VERSION_LOADED


async def _load_events(lab) -> list[registry_pb2.DeploymentHistoryEntry]:
    answer = await lab.reg.ListDeploymentHistory(
        registry_pb2.ListDeploymentHistoryRequest(model_name="lm")
    )
    return [e for e in answer.entries if e.kind in (FAILED, LOADED)]


async def _wait_events(lab, count: int, timeout: float = 30.0):
    for _ in range(int(timeout / 0.1)):
        events = await _load_events(lab)
        if len(events) >= count:
            return events
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} load events, got {await _load_events(lab)}")


async def test_a_failed_load_then_its_recovery_are_each_recorded_once(lab, model_dirs):
    await deploy_lm(lab, model_dirs)
    v2 = await lab.register("lm", model_dirs["lm2"])
    blob = lab.tampered_blob(v2.digest)
    good = blob.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    await lab.deploy("lm", {1: 90, 2: 10})
    (failed,) = await _wait_events(lab, 1)
    assert failed.kind == FAILED and failed.version == 2
    assert "failed verification" in failed.reason
    assert str(lab.root) not in failed.reason
    # The first retry (2 s later) fails the same way: nothing new is recorded.
    await lab.wait_state("lm", 2, VersionState.FAILED)
    await asyncio.sleep(2.5)
    assert len(await _load_events(lab)) == 1

    blob.write_bytes(good)  # repaired: the next retry loads it
    await lab.wait_state("lm", 2, VersionState.READY, timeout=30)
    events = await _wait_events(lab, 2)
    assert [(e.kind, e.version) for e in events] == [(LOADED, 2), (FAILED, 2)]
    assert events[0].replica == failed.replica
