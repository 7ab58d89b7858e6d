"""``GET /openapi.yaml``: the OpenAPI 3 document of the API.

The document is package data (``proxy/openapi.yaml``; ``openapi.yaml`` at the repository root links
to it), so an installed service serves it too.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aiohttp import web

from ..errors import NotFound

DOCUMENT = Path(__file__).resolve().parent.parent / "openapi.yaml"


@cache
def openapi_document() -> bytes:
    """The document's bytes, read once."""
    return DOCUMENT.read_bytes() if DOCUMENT.is_file() else b""


async def openapi(request: web.Request) -> web.Response:
    body = openapi_document()
    if not body:
        raise NotFound("this install has no openapi.yaml", code="RouteNotFound")
    return web.Response(body=body, content_type="application/yaml", charset="utf-8",
                        headers={"Cache-Control": "public, max-age=3600"})
