"""The asset route: renders from the cache folder, and originals for download links.

Embedded mode answers every asset URL here. Behind nginx, nginx answers the renders this host has on
disk and passes the others here (its ``try_files`` fallback): a render's URL describes it
(``links.py``), so a host that has not made it makes it now and answers the image, never a 404.
"""

from __future__ import annotations

import asyncio
import time
from typing import NoReturn
from urllib.parse import unquote

from aiohttp import web

from ..access import origin_space
from ..errors import Forbidden, NotFound
from ..keys import CACHE, CONFIG, PREVIEWS
from ..links import ORIGINALS, parse_render_uri, verify_signature
from ..media import CONTENT_TYPES
from ..middleware import CACHE as CACHE_RESULT
from ..request import parse_file_route
from .files import stream_original

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
    asset = parse_render_uri(rel)
    if asset is None:
        raise NotFound("no such asset", code="FileNotFound")
    expires = _signed(request, raw_path)
    if asset.private and expires is None:
        raise Forbidden("a private render's link must be signed", code="InvalidSignature")
    cache = request.app[CACHE]
    cache_control = IMMUTABLE if expires is None else _private_cache_control(expires)
    path = cache.path(asset.rel)
    # a stat each time, in the file-system executor: the index may still list a file another worker
    # evicted, and FileResponse would answer a bare 404 for it, not the API's JSON error
    if not await asyncio.get_running_loop().run_in_executor(cache.io, path.is_file):
        lib = config.library(asset.library)
        if lib is None:
            _missing()
        cache.forget(asset.rel)  # gone: the index must not answer a hit for it
        rel, own = await request.app[PREVIEWS].asset(lib, asset)
        request[CACHE_RESULT] = "miss"
        path = cache.path(rel)
        if not own and expires is None:  # not this URL's render: never cached as if it were
            cache_control = f"public, max-age={config.server.redirect_max_age}"
    headers = {"Content-Type": CONTENT_TYPES[asset.ext], "Cache-Control": cache_control}
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
