"""Uvicorn serving the HTTP front on the gateway's own event loop.

Why in-process, same loop: the HTTP front calls the very `Gateway` object the
gRPC servicers call (its quota batcher, token cache, replica pool and shadow
tasks are loop-bound), so a second loop or process would mean a second copy
of the data plane. `uvicorn.Server.serve()` runs as a task beside `grpc.aio`.

The socket is bound here, not by uvicorn, so a busy port fails at build time
like the gRPC port does, and port 0 is readable at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway process owns SIGTERM/SIGINT
    and stops this server itself during its drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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
    sock.setblocking(False)
    return sock


class HttpListener:
    """One HTTP/1.1 listener; TLS (and client certificates) like the gRPC port."""

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
    ) -> None:
        self._socket = _bind(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self.tls = bool(cert_file)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=max(1, int(grace_seconds)),
            ssl_certfile=cert_file or None,
            ssl_keyfile=key_file or None,
            ssl_ca_certs=client_ca_file or None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca_file else ssl.CERT_NONE,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise OSError("the HTTP listener stopped while starting")
            await asyncio.sleep(0.01)
        log.info("serving HTTP on %s", self.url)

    async def stop(self) -> None:
        """Stop accepting, let open requests finish within the grace period."""
        if self._task is None:
            self._socket.close()
            return
        self._server.should_exit = True
        await self._task
        self._task = None
