"""The two ASGI servers the HTTP front can run on, embedded in the gateway's loop.

- uvicorn: HTTP/1.1 only; the faster of the two for HTTP/1.1 (see
  `bench/http_overhead.py`), so the default on a cleartext port.
- hypercorn: HTTP/1.1 and HTTP/2 (h2 negotiated by TLS ALPN; on cleartext, h2c
  by prior knowledge or `Upgrade: h2c`), so the default when TLS is on, where
  browsers and most HTTP/2 clients only speak h2.

Both take a socket bound by the listener, leave signals to the gateway process,
log through `logging` and send no `server` header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config as HypercornConfig
from starlette.types import ASGIApp

AUTO, UVICORN, HYPERCORN = "auto", "uvicorn", "hypercorn"
CHOICES = (AUTO, UVICORN, HYPERCORN)
#: Pending connections the kernel queues before the server accepts them.
BACKLOG = 2048


@dataclass(frozen=True)
class TlsFiles:
    """The gRPC port's TLS settings; no cert = cleartext."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


def choose(server: str, tls: TlsFiles) -> str:
    """`auto`: hypercorn (HTTP/2 and HTTP/1.1) with TLS, uvicorn (HTTP/1.1) without."""
    if server not in CHOICES:
        raise ValueError(f"http_server must be one of {', '.join(CHOICES)}, not {server!r}")
    if server == AUTO:
        return HYPERCORN if tls.enabled else UVICORN
    return server


class _QuietUvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway process owns SIGTERM/SIGINT
    and stops this server itself during its drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class UvicornServer:
    """HTTP/1.1, parsed by httptools (C, llhttp): ~0.2 ms less per request than
    the pure-Python h11 (same run, same app, median time to first byte)."""

    http2 = False

    def __init__(self, app: ASGIApp, sock: socket.socket, tls: TlsFiles, grace: float) -> None:
        self._socket = sock
        config = uvicorn.Config(
            app,
            lifespan="off",
            http="httptools",
            log_config=None,
            access_log=False,
            server_header=False,
            backlog=BACKLOG,
            timeout_graceful_shutdown=max(1, int(grace)),
            ssl_certfile=tls.cert_file or None,
            ssl_keyfile=tls.key_file or None,
            ssl_ca_certs=tls.client_ca_file or None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
        )
        self._server = _QuietUvicorn(config)

    @property
    def started(self) -> bool:
        return self._server.started

    async def serve(self) -> None:
        await self._server.serve(sockets=[self._socket])

    def shutdown(self) -> None:
        self._server.should_exit = True


class HypercornServer:
    """HTTP/2 and HTTP/1.1 on one port."""

    http2 = True

    def __init__(self, app: ASGIApp, sock: socket.socket, tls: TlsFiles, grace: float) -> None:
        self._app = app
        config = HypercornConfig()
        # The listener's socket, handed over by descriptor (hypercorn's `fd://` bind):
        # hypercorn owns it from here and closes it when it stops.
        config.bind = [f"fd://{sock.detach()}"]
        config.backlog = BACKLOG
        config.graceful_timeout = grace
        config.include_server_header = False
        # hypercorn closes a connection after 1000 requests by default; on h2 that
        # GOAWAY fails the requests in flight on it in httpx (the openai SDK's
        # transport) instead of retrying them (seen in bench/http_overhead.py at
        # c=32). uvicorn has no such cap either.
        config.keep_alive_max_requests = sys.maxsize
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        if tls.enabled:
            config.certfile = tls.cert_file
            config.keyfile = tls.key_file
            if tls.client_ca_file:
                config.ca_certs = tls.client_ca_file
                config.verify_mode = ssl.CERT_REQUIRED
            config.create_ssl_context()  # bad files fail here, at build time, not in the task
        self._config = config
        self._stop = asyncio.Event()
        self._serving = False

    @property
    def started(self) -> bool:
        return self._serving

    async def serve(self) -> None:
        self._serving = True
        await hypercorn_serve(
            self._app,  # type: ignore[arg-type]  # hypercorn's own ASGI typing
            self._config,
            shutdown_trigger=self._stop.wait,
            mode="asgi",
        )

    def shutdown(self) -> None:
        self._stop.set()


def build(
    server: str, app: ASGIApp, sock: socket.socket, tls: TlsFiles, grace: float
) -> UvicornServer | HypercornServer:
    kind = choose(server, tls)
    if kind == HYPERCORN:
        return HypercornServer(app, sock, tls, grace)
    return UvicornServer(app, sock, tls, grace)
