"""The `main()` every service shares: settings, logging, tracing, run, drain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from services.runtime.collector import settle_the_collector
from services.runtime.logs import configure_logging
from services.runtime.server import LatticeServer, run_until_signalled
from services.runtime.settings import ServerSettings, load_settings
from services.runtime.telemetry import install_global_tracing

S = TypeVar("S", bound=ServerSettings)


def run_service(
    name: str,
    settings_type: type[S],
    build: Callable[[S], Awaitable[LatticeServer]],
    argv: Sequence[str] | None = None,
) -> None:
    """Run one service in this process until SIGTERM/SIGINT, then drain and exit 0."""
    settings = load_settings(settings_type, name, argv)
    configure_logging(name, settings.log_level, settings.log_json)
    install_global_tracing(name)
    asyncio.run(run_until_signalled(lambda: build_process_server(build, settings)))


async def build_process_server(
    build: Callable[[S], Awaitable[LatticeServer]], settings: S
) -> LatticeServer:
    """`build(settings)` for a process that is one service: the garbage
    collector is settled once it serves (`collector.settle_the_collector`)."""
    server = await build(settings)
    server.on_start(settle_the_collector)  # after every front has started
    return server
