"""The HTTP front's port, served on the gateway's own event loop.

Why in-process, same loop: the HTTP front calls the very `Gateway` object the
gRPC servicers call (its quota batcher, token cache, replica pool and shadow
tasks are loop-bound), so a second loop or process would mean a second copy
of the data plane. The ASGI server (`servers`: uvicorn or hypercorn) runs as a
task beside `grpc.aio`.

The socket is bound and listening here, not in the server, so a busy port
fails at build time like the gRPC port does, port 0 is readable at once, and
a connection made while the server task starts waits in the backlog.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from starlette.types import ASGIApp

from services.gateway.http.servers import AUTO, BACKLOG, TlsFiles, build

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they
    # are TCP, and without it small responses wait ~40 ms for the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"could not bind HTTP port {host}:{port}: {exc.strerror}") from None
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


class HttpListener:
    """One HTTP port; TLS (and client certificates) like the gRPC port. `server`
    picks the ASGI server (`servers.CHOICES`; `auto`: HTTP/2 with TLS)."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        cert_file: str = "",
        key_file: str = "",
        client_ca_file: str = "",
        grace_seconds: float = 10.0,
        server: str = AUTO,
    ) -> None:
        tls = TlsFiles(cert_file, key_file, client_ca_file)
        sock = _bind(host, port)
        self.host = host
        self.port: int = sock.getsockname()[1]
        self.tls = tls.enabled
        try:
            self._server = build(server, app, sock, tls, grace_seconds)
        except BaseException:
            if sock.fileno() >= 0:
                sock.close()
            raise
        self._socket = sock
        self._task: asyncio.Task[None] | None = None

    @property
    def http2(self) -> bool:
        """Whether this port also speaks HTTP/2 (h2 over TLS, h2c in cleartext)."""
        return self._server.http2

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError("the HTTP listener stopped while starting")
            await asyncio.sleep(0.01)
        versions = "HTTP/2, HTTP/1.1" if self.http2 else "HTTP/1.1"
        log.info("serving HTTP on %s (%s)", self.url, versions)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish within the grace period."""
        if self._task is None:
            if self._socket.fileno() >= 0:
                self._socket.close()
            return
        self._server.shutdown()
        await self._task
        self._task = None
