"""deploy/docker/healthcheck.py (Docker HEALTHCHECK) against a real LatticeServer."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from services.runtime import LatticeServer, ServerSettings
from services.suite.ports import free_port

PROBE = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


async def probe(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBE), *args, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, err.decode()


async def test_probe_follows_the_servers_health_and_fails_when_nothing_listens():
    server = LatticeServer([], ServerSettings(port=0))
    await server.start()
    try:
        target = f"127.0.0.1:{server.port}"
        assert await probe(target) == (0, "")
        code, err = await probe(target, "lattice.v1.NoSuchService")
        assert code == 1 and "NOT_FOUND" in err
        await server.set_serving(False)
        code, err = await probe(target)
        assert code == 1 and "NOT_SERVING" in err
    finally:
        await server.stop(0)
    code, err = await probe(f"127.0.0.1:{free_port()}")
    assert code == 1 and "UNAVAILABLE" in err
