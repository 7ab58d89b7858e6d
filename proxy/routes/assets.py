"""Embedded mode's asset route: renders from the cache folder, and originals for download links.

In production nginx answers these same URLs from disk (``nginx/``); this route exists so that one
process with no nginx serves the whole API, with the same headers and signature checks.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import NoReturn
from urllib.parse import unquote

from aiohttp import web

from ..access import origin_space, verify_signature
from ..errors import Forbidden, NotFound
from ..keys import CACHE, CONFIG
from ..media import CONTENT_TYPES
from ..request import parse_file_route
from ..service import ORIGINALS
from .files import stream_original

# renders: "<library>/ab/cd/<key>.<ext>"; those of private content under "p/", which needs a signature
_RENDER = re.compile(r"^(p/)?[A-Za-z0-9_-]{1,64}/([0-9a-f]{2})/([0-9a-f]{2})/(\2\3[0-9a-f]{36})"
                     r"\.(jpeg|png|gif|webp|avif)$")
IMMUTABLE = "public, max-age=31536000, immutable"


def _signed(request: web.Request, uri: str) -> int | None:
    """The expiry of a valid signature on this request, or None when it carries none."""
    query = request.query
    if "md5" not in query and "expires" not in query:
        return None
    secret = request.app[CONFIG].cache.sign_secret.reveal()
    # the decoded path, as nginx's $uri (and as the proxy signs it)
    if not verify_signature(unquote(uri), query.get("md5", ""), query.get("expires", ""), secret):
        raise Forbidden("the link's signature is wrong or has expired", code="InvalidSignature")
    return int(query["expires"])


def _private_cache_control(expires: int) -> str:
    return f"private, max-age={max(0, expires - int(time.time()))}"


async def asset_route(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    raw_path = request.raw_path.partition("?")[0]
    rel = raw_path[len(config.cache.asset_prefix):]
    if rel.startswith(ORIGINALS):
        return await _original(request, rel[len(ORIGINALS):], raw_path)
    m = _RENDER.match(rel)
    if not m:
        raise NotFound("no such asset", code="FileNotFound")
    expires = _signed(request, raw_path)
    if m.group(1) and expires is None:
        raise Forbidden("a private render's link must be signed", code="InvalidSignature")
    cache = request.app[CACHE]
    headers = {"Content-Type": CONTENT_TYPES[m.group(5)],
               "Cache-Control": IMMUTABLE if expires is None else _private_cache_control(expires)}
    path = cache.path(rel)
    # a stat each time, in the file-system executor: the index may still list a file another worker
    # evicted, and FileResponse would answer a bare 404 for it, not the API's JSON error
    if not await asyncio.get_running_loop().run_in_executor(cache.io, path.is_file):
        _missing()
    return web.FileResponse(path, headers=headers)


def _missing() -> NoReturn:
    raise NotFound("no such asset (it may have been evicted: ask for the preview again)",
                   code="FileNotFound")


async def _original(request: web.Request, rest: str, raw_path: str) -> web.StreamResponse:
    ref = parse_file_route(rest)
    lib = request.app[CONFIG].library(ref.library)
    if lib is None:
        raise NotFound(f"no library {ref.library!r}", code="LibraryNotFound")
    space = origin_space(lib, ref.space)
    public = lib.space_public(ref.space)
    expires = None if public else _signed(request, raw_path)
    if not public and expires is None:
        raise Forbidden("a private file's link must be signed", code="InvalidSignature")
    return await stream_original(request, lib, space, ref, public=public,
                                 cache_control="" if expires is None else _private_cache_control(expires))
