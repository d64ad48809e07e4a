"""Wait for a real server process to answer grpc.health.v1 SERVING."""

from __future__ import annotations

import asyncio
import time

from services.suite.supervisor import wait_serving as _supervisor_wait


async def wait_serving(
    address: str, timeout: float = 30, process: asyncio.subprocess.Process | None = None
) -> None:
    """The probe `lattice up` uses; fails early if `process` exits first."""
    waiting = asyncio.ensure_future(_supervisor_wait(address, time.monotonic() + timeout))
    if process is None:
        await waiting
        return
    exited = asyncio.ensure_future(process.wait())
    done, _ = await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:
        waiting.cancel()
        raise AssertionError(f"the server at {address} exited with {process.returncode}")
    exited.cancel()
    waiting.result()
