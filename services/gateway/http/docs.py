"""`/docs`: Swagger UI over `/openapi.json`, served from the `swagger-ui-bundle` wheel
(no CDN: the page works on a machine without internet access)."""

from __future__ import annotations

import swagger_ui_bundle  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Lattice REST API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});
  </script>
</body>
</html>
"""


async def _page(request: Request) -> Response:
    return HTMLResponse(_PAGE)


def docs_routes() -> list[Route | Mount]:
    return [
        Route("/docs", _page, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path)),
    ]
