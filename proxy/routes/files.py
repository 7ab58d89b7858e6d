"""``/api/v1/file/{LibraryId}/{SpaceId}/{FilePath}`` (preview and download link) and drop-in mounts."""

from __future__ import annotations

import json
from contextlib import aclosing

from aiohttp import web

from ..access import check_access, origin_space
from ..config import LibraryConfig
from ..errors import ApiError, NotFound
from ..keys import CACHE as DISK_CACHE
from ..keys import CONFIG, DECISIONS, METRICS, ORIGINS, PREVIEWS, STORE
from ..media import kind_of, original_content_type
from ..middleware import ABORTED, CACHE, REQUEST_ID, USER, errors_log
from ..request import (
    FileRef,
    accepted_format,
    decode_file_path,
    is_preview,
    parse_credentials,
    parse_file_route,
    parse_options,
    parse_query,
)
from ..service import negotiate

FILE_PREFIX = "/api/v1/file/"
# Originals are the users' files, served on our host: never let one run as a page (an SVG or HTML
# with a script). The same headers are in the generated nginx.conf.
ORIGINAL_HEADERS = {"X-Content-Type-Options": "nosniff",
                    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox"}


def redirect_cache_control(max_age: int) -> str:
    """A public 302's Cache-Control. ``stale-while-revalidate=0``: shared caches keep it ``max_age``
    seconds and not longer. Varnish (and CDNs built like it) otherwise serve an expired object for a
    grace period (Varnish: 10 s) while fetching it again, i.e. the previous render after a change."""
    return f"public, max-age={max_age}, stale-while-revalidate=0"


def _split(raw_path: str) -> tuple[str, str]:
    path, _, query = raw_path.partition("?")
    return path, query


async def _answer(request: web.Request, lib: LibraryConfig, ref: FileRef, query: dict[str, str]
                  ) -> web.StreamResponse:
    config = request.app[CONFIG]
    space = origin_space(lib, ref.space)
    grant = await check_access(lib, ref.space, parse_credentials(query, request.headers.get("Authorization")),
                               request.app[STORE])
    if grant.user_id:
        request[USER] = grant.user_id
    previews = request.app[PREVIEWS]
    headers = {"Cache-Control": redirect_cache_control(config.server.redirect_max_age) if grant.public
               else "private, no-store"}
    if is_preview(query):
        options, vary = negotiate(ref, parse_options(query), request.headers.get("Accept", ""),
                                  config.output.negotiate)
        if vary:
            headers["Vary"] = "Accept"
        decision = await previews.preview(lib, space, ref, options, grant)
        if decision.cache_hit is not None:
            request[CACHE] = "hit" if decision.cache_hit else "miss"
        if grant.public and decision.rel:
            request.app[DECISIONS].put(_decision_key(request), {**headers, "Location": decision.location},
                                       decision.rel)
    else:
        decision = await previews.download(lib, space, ref, grant)
        if request.method == "HEAD":
            st = await previews.source_stat(lib, space, ref)
            headers["x-smh-type"] = kind_of(ref.extension).value
            if st.size >= 0:
                headers["x-smh-size"] = str(st.size)
            headers["x-smh-etag"] = st.etag or st.version
    headers["Location"] = decision.location
    return web.Response(status=302, headers=headers)


def _decision_key(request: web.Request) -> str:
    """The micro-cache's key: the raw URI, and with negotiation on, the format the Accept picks."""
    offer = request.app[CONFIG].output.negotiate
    if not offer:
        return request.raw_path
    return f"{request.raw_path} {accepted_format(request.headers.get('Accept', ''), offer)}"


def _answered(request: web.Request) -> web.Response | None:
    """The 302 of a public preview answered moments ago, if any (see decisions.py)."""
    known = request.app[DECISIONS].get(_decision_key(request))
    if known is None:
        return None
    request.app[DISK_CACHE].touch(known.rel)
    request.app[METRICS].cache_hits.inc()
    request[CACHE] = "hit"
    return web.Response(status=302, headers=known.headers)


async def file_route(request: web.Request) -> web.StreamResponse:
    """Preview (``?preview``): 302 to the render. Without it: 302 to the original (download link)."""
    if answered := _answered(request):
        return answered
    path, raw_query = _split(request.raw_path)
    ref = parse_file_route(path[len(FILE_PREFIX):])
    lib = request.app[CONFIG].library(ref.library)
    if lib is None:
        raise NotFound(f"no library {ref.library!r}", code="LibraryNotFound")
    return await _answer(request, lib, ref, parse_query(raw_query))


def mount_route(lib: LibraryConfig) -> web.Handler:
    """``{mount}a/b.jpg?preview&size=200`` is ``/api/v1/file/{id}/-/a/b.jpg?preview&size=200``;
    without ``preview`` the original bytes are answered (behind nginx, nginx does that itself)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if answered := _answered(request):
            return answered
        path, raw_query = _split(request.raw_path)
        ref = FileRef(lib.id, "-", decode_file_path(path[len(lib.mount):]))
        query = parse_query(raw_query)
        if is_preview(query):
            return await _answer(request, lib, ref, query)
        space = origin_space(lib, ref.space)
        grant = await check_access(lib, ref.space,
                                   parse_credentials(query, request.headers.get("Authorization")),
                                   request.app[STORE])
        if grant.user_id:
            request[USER] = grant.user_id
        return await stream_original(request, lib, space, ref, public=grant.public)

    return handler


async def stream_original(request: web.Request, lib: LibraryConfig, space: str, ref: FileRef, *,
                          public: bool, cache_control: str = "") -> web.StreamResponse:
    """The original's bytes, streamed from the origin (local files with sendfile)."""
    st = await request.app[PREVIEWS].source_stat(lib, space, ref)
    cache_control = cache_control or ("public, max-age=3600" if public else "private, max-age=3600")
    headers = {"Cache-Control": cache_control, "Content-Type": original_content_type(ref.extension),
               **ORIGINAL_HEADERS}
    if st.local_path:
        response = web.FileResponse(st.local_path, headers=headers)
        return response
    # the middleware adds the id to a returned response; this one is sent before it returns
    headers["X-Request-Id"] = request[REQUEST_ID]
    origin = request.app[ORIGINS][lib.id]
    # closed however this ends (HEAD, a client that hangs up, an origin that fails): the origin's
    # connection is released now, not whenever the generator is collected
    async with aclosing(origin.stream(space, ref.path, st)) as chunks:
        first = await anext(chunks, b"")  # errors before the status line is sent are still JSON errors
        # no Content-Length from the (possibly older) stat: the bytes come from this GET; chunked
        response = web.StreamResponse(status=200, headers=headers)
        await response.prepare(request)
        if request.method != "HEAD":
            try:
                await response.write(first)
                async for chunk in chunks:
                    await response.write(chunk)
            except ApiError as exc:  # the origin failed after the 200 went out
                abort_stream(request, exc.code, exc.message)
                return response
            except ConnectionError:  # the client hung up
                request[ABORTED] = "client_gone"
                return response
    await response.write_eof()
    return response


def abort_stream(request: web.Request, code: str, message: str) -> None:
    """Break a response whose status line has gone out: the client sees a failed transfer (no last
    chunk), never a short body that looks whole; the log says what happened."""
    request[ABORTED] = code
    errors_log.warning(json.dumps({"event": "stream_aborted", "id": request[REQUEST_ID],
                                   "path": request.path, "code": code, "message": message}))
    if request.transport is not None:
        request.transport.abort()
