"""Per-request bookkeeping of the HTTP front, as one pure ASGI middleware.

It does for an HTTP request what `services.runtime.rpc_wrapper` does for an
RPC: one access log line (the same `lattice.rpc` logger and format, the HTTP
status as the code), continue the caller's W3C trace in a SERVER span (made current, so the
gateway's stage spans and the upstream calls are its children: one trace
from the HTTP span down to inference), bind the request id the upstream
channels forward, and return that id as `x-request-id`. It wraps the whole
ASGI call, so a streamed response stays inside its span until the last byte.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime.context import REQUEST_ID_KEY, deadline_var, new_request_id, request_id_var
from services.runtime.logs import AccessLog

#: A caller's own request id is kept only if it looks like an id, not like an injection.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_REQUEST_ID_HEADER = REQUEST_ID_KEY.encode()


class RequestContext:
    """Span, request id and `x-request-id` for every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        tracer_provider: trace.TracerProvider | None = None,
        access_log: AccessLog | None = None,
    ) -> None:
        self._app = app
        self._access_log = access_log or AccessLog(enabled=False)
        self._tracer = trace.get_tracer("lattice.http", tracer_provider=tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get(REQUEST_ID_KEY, "")
        request_id = given if _REQUEST_ID.match(given) else new_request_id()
        request_id_var.set(request_id)
        deadline_var.set(None)
        method = scope["method"]
        span = self._tracer.start_span(
            f"{method} {scope['path']}",
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        status = 500
        started = time.perf_counter()

        def send_with_id(message: Message) -> Awaitable[None]:
            """Hands back `send`'s own awaitable: no coroutine of its own for
            each of a stream's events."""
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (_REQUEST_ID_HEADER, request_id.encode()),
                ]
            return send(message)

        try:
            await self._app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            name = f"{method} {scope['path']}"
            if status >= 400:
                self._access_log.failed(name, str(status), elapsed, "")
            else:
                self._access_log.served(name, str(status), elapsed)
            if span.is_recording():
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
            otel_context.detach(token)
