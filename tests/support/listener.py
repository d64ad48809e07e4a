"""A TCP listener that only counts who connects: proof that nothing dialled it."""

from __future__ import annotations

import asyncio


class CountingListener:
    """Accepts and closes connections on 127.0.0.1, counting them."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> CountingListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
