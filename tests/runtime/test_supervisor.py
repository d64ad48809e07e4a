"""The supervisor `lattice up` runs on, with real child processes."""

from __future__ import annotations

import asyncio
import sys

from services.suite.supervisor import ChildSpec, Supervisor


async def _never_healthy(address: str, deadline: float) -> float:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def test_a_child_that_dies_again_before_it_is_healthy_keeps_being_restarted():
    """A restarted child that exits before its probe passes is restarted again
    (the health report must not end the watch loop)."""
    reports: list[str] = []
    spec = ChildSpec(
        name="crasher",
        address="127.0.0.1:1",
        argv=[sys.executable, "-c", "import sys; sys.exit(3)"],
        probe=_never_healthy,
    )
    supervisor = Supervisor([spec], grace_seconds=1, max_backoff=0.5, report=reports.append)
    await supervisor.start()
    try:
        for _ in range(200):
            if sum("exited with code 3" in line for line in reports) >= 3:
                break
            await asyncio.sleep(0.05)
    finally:
        await supervisor.stop()
    assert sum("exited with code 3" in line for line in reports) >= 3, reports
    assert not [line for line in reports if "healthy again" in line]
