"""The HTTP front's ASGI application: health, `/v1`, all inside `RequestContext`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata

from opentelemetry.trace import TracerProvider
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from services.gateway.gateway import Gateway
from services.gateway.http.bindings import bindings_of
from services.gateway.http.context import RequestContext
from services.gateway.http.docs import docs_routes
from services.gateway.http.openai_api import HttpLimits, OpenAIRoutes
from services.gateway.http.openapi import openapi_document
from services.gateway.http.transcode import rest_routes
from services.runtime import Service
from services.runtime.logs import AccessLog

_TYPES = {404: "not_found_error", 405: "invalid_request_error"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in the same error shape as everything else."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {404: f"no route {request.url.path}", 405: f"{request.method} not allowed here"}
    body = {
        "error": {
            "message": message.get(status, "request failed"),
            "type": _TYPES.get(status, "invalid_request_error"),
            "param": None,
            "code": "not_found" if status == 404 else "invalid_argument",
        }
    }
    return JSONResponse(body, status_code=status)


def _version() -> str:
    try:
        return metadata.version("lattice-llm")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0"


def build_app(
    gateway: Gateway,
    services: Sequence[Service],
    limits: HttpLimits,
    *,
    ready: Callable[[], bool],
    tracer_provider: TracerProvider | None = None,
    access_log: AccessLog | None = None,
) -> ASGIApp:
    """`/healthz` (alive), `/readyz` (routing table loaded), the OpenAI routes, REST
    for every annotated RPC of `services` (the servicers the gRPC server mounts),
    `/openapi.json` and `/docs`."""
    bindings = bindings_of(m for service in services for m in service.descriptor.methods)
    document = openapi_document(bindings, version=_version())
    servicers = {service.name: service.servicer for service in services}

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503, headers={"retry-after": "1"})

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *OpenAIRoutes(gateway, limits).routes(),
        *rest_routes(bindings, servicers, limits.max_body_bytes),
        Route("/openapi.json", openapi, methods=["GET"]),
        *docs_routes(),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    return RequestContext(app, tracer_provider, access_log)
