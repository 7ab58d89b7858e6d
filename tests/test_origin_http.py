"""The HTTP origin, driven through the app against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, FolderOrigin, follow, free_port, gradient, preview, renders

from proxy.app import create_app

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Server:
    """A tiny aiohttp server on a loopback address whose every path answers with ``handler``."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.hits = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        return await self.handler(request)

    async def start(self) -> Server:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, self.host, port).start()
        self.url = f"http://{self.host}:{port}/"
        return self

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    started: list[Server] = []

    async def start(handler: Handler, host: str = "127.0.0.1") -> Server:
        server = await Server(handler, host).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def app_for(aiohttp_client: Any, make_config: ConfigFactory, url: str, **sections: Any) -> TestClient:
    cfg = make_config(libraries=[{"id": "web", "origin": url, "secret": "s"}], **sections)
    return await aiohttp_client(create_app(cfg))


async def error_of(client: TestClient, path: str, query: str = "?preview&size=50") -> tuple[int, str]:
    resp = await client.get(f"/api/v1/file/web/-/{path}{query}", allow_redirects=False)
    body = json.loads(await resp.read())
    assert set(body) == {"code", "message", "requestId"}
    assert body["requestId"] == resp.headers["X-Request-Id"]
    return resp.status, body["code"]


def jpeg_bytes(width: int = 64, height: int = 48) -> bytes:
    return gradient(width, height).jpegsave_buffer(Q=90)


# ---- the happy path -----------------------------------------------------------------------------------


async def test_preview_and_download(aiohttp_client: Any, make_config: ConfigFactory,
                                    http_origin: FolderOrigin, media: Path) -> None:
    client = await app_for(aiohttp_client, make_config, http_origin.url)
    image = await preview(client, "landscape.jpg", "size=120", library="web")
    assert (image.width, image.height) == (120, 120)
    image = await preview(client, "%E7%9B%B8%E5%86%8C%20%E4%B8%80/%E7%85%A7%E7%89%87%201.jpg",
                          "width_size=64", library="web")
    assert (image.width, image.height) == (64, 43)
    assert ("GET", "/相册 一/照片 1.jpg") in http_origin.requests
    resp = await client.get("/api/v1/file/web/-/doc.pdf", allow_redirects=False)
    assert resp.status == 302
    status, headers, body = await follow(client, resp.headers["Location"])
    assert status == 200 and body == (media / "doc.pdf").read_bytes()
    assert headers["Content-Type"] == "application/pdf"
    head = await client.head("/api/v1/file/web/-/landscape.jpg", allow_redirects=False)
    assert head.status == 302 and head.headers["x-smh-type"] == "image"
    assert head.headers["x-smh-size"] == str((media / "landscape.jpg").stat().st_size)
    assert head.headers["x-smh-etag"] == http_origin.etag_of("landscape.jpg")   # the origin's own ETag


async def test_etag_is_the_version_and_revalidation_is_conditional(
        aiohttp_client: Any, make_config: ConfigFactory, http_origin: FolderOrigin, media: Path) -> None:
    client = await app_for(aiohttp_client, make_config, http_origin.url, cache={"version_ttl": 0.05})
    url = "/api/v1/file/web/-/landscape.jpg?preview&size=100"
    first = (await client.get(url, allow_redirects=False)).headers["Location"]
    await asyncio.sleep(0.1)
    http_origin.headers.clear()
    http_origin.requests.clear()
    http_origin.statuses.clear()
    again = await client.get(url, allow_redirects=False)
    assert again.headers["Location"] == first
    # revalidated with the ETag it had, answered 304, and the body was not fetched again
    assert http_origin.requests == [("HEAD", "/landscape.jpg")]
    assert http_origin.headers[0]["If-None-Match"] == http_origin.etag_of("landscape.jpg")
    assert http_origin.statuses == [304]
    # the file changes: after version_ttl, a new Location and a new picture
    gradient(640, 427).flip("vertical").jpegsave(str(media / "landscape.jpg"), Q=90)
    await asyncio.sleep(0.1)
    changed = await client.get(url, allow_redirects=False)
    assert changed.status == 302 and changed.headers["Location"] != first
    new = pyvips.Image.new_from_buffer((await follow(client, changed.headers["Location"]))[2], "")
    old = pyvips.Image.new_from_buffer((await follow(client, first))[2], "")
    assert (new.width, new.height) == (100, 100)
    diff = float((new.cast("float") - old.flip("vertical").cast("float")).abs().avg())
    assert diff < 4


async def test_version_is_trusted_within_version_ttl(aiohttp_client: Any, make_config: ConfigFactory,
                                                     http_origin: FolderOrigin) -> None:
    client = await app_for(aiohttp_client, make_config, http_origin.url, cache={"version_ttl": 60})
    url = "/api/v1/file/web/-/landscape.jpg?preview&size=100"
    await client.get(url, allow_redirects=False)
    before = len(http_origin.requests)
    for _ in range(5):
        assert (await client.get(url, allow_redirects=False)).status == 302
    assert len(http_origin.requests) == before


# ---- failures -----------------------------------------------------------------------------------------


async def test_missing_at_the_origin(aiohttp_client: Any, make_config: ConfigFactory,
                                     http_origin: FolderOrigin) -> None:
    client = await app_for(aiohttp_client, make_config, http_origin.url)
    assert await error_of(client, "missing.jpg") == (404, "FileNotFound")
    assert await error_of(client, "missing.pdf", "") == (404, "FileNotFound")
    assert await error_of(client, "missing.pdf", "?preview") == (404, "FileNotFound")


async def test_gone_is_file_not_found(aiohttp_client: Any, make_config: ConfigFactory, servers: Any) -> None:
    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=410)

    server = await servers(gone)
    client = await app_for(aiohttp_client, make_config, server.url)
    assert await error_of(client, "a.jpg") == (404, "FileNotFound")


async def test_byte_cap_from_content_length(aiohttp_client: Any, make_config: ConfigFactory,
                                            http_origin: FolderOrigin, media: Path) -> None:
    client = await app_for(aiohttp_client, make_config, http_origin.url, limits={"max_source_bytes": 2000})
    assert (media / "landscape.jpg").stat().st_size > 2000
    assert await error_of(client, "landscape.jpg") == (413, "SourceTooLarge")
    assert (await preview(client, "tiny.jpg", "size=20", library="web")).width == 20


async def test_byte_cap_while_streaming(aiohttp_client: Any, make_config: ConfigFactory,
                                        servers: Any) -> None:
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"ETag": '"x"'})   # chunked: no Content-Length to refuse early
        await resp.prepare(request)
        if request.method == "GET":
            for _ in range(200):
                await resp.write(b"\xff\xd8" + bytes(8190))
                sent += 8192
        await resp.write_eof()
        return resp

    server = await servers(endless)
    client = await app_for(aiohttp_client, make_config, server.url, limits={"max_source_bytes": 50_000})
    assert await error_of(client, "big.jpg") == (413, "SourceTooLarge")


async def test_redirects(aiohttp_client: Any, make_config: ConfigFactory, servers: Any) -> None:
    picture = jpeg_bytes()

    async def elsewhere(request: web.Request) -> web.Response:
        return web.Response(body=picture, headers={"ETag": '"e"'})

    other = await servers(elsewhere, host="127.0.0.2")

    async def redirecting(request: web.Request) -> web.Response:
        if request.path == "/away.jpg":
            raise web.HTTPFound(other.url + "away.jpg")
        if request.path == "/here.jpg":
            raise web.HTTPFound("/moved/here.jpg")
        if request.path == "/loop.jpg":
            raise web.HTTPFound("/loop.jpg")
        if request.path == "/file.jpg":
            raise web.HTTPFound("file:///etc/passwd")
        return web.Response(body=picture, headers={"ETag": '"h"'})

    server = await servers(redirecting)
    client = await app_for(aiohttp_client, make_config, server.url)
    assert await error_of(client, "away.jpg") == (502, "OriginError")
    assert await error_of(client, "away.jpg", "") == (502, "OriginError")
    assert other.hits == 0                                       # never contacted
    assert await error_of(client, "loop.jpg") == (502, "OriginError")
    assert await error_of(client, "file.jpg") == (502, "OriginError")
    image = await preview(client, "here.jpg", "width_size=32", library="web")   # same host: followed
    assert (image.width, image.height) == (32, 24)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors(aiohttp_client: Any, make_config: ConfigFactory, servers: Any,
                             status: int) -> None:
    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=status, text="upstream trouble")

    server = await servers(failing)
    client = await app_for(aiohttp_client, make_config, server.url)
    assert await error_of(client, "a.jpg") == (502, "OriginError")
    assert await error_of(client, "a.pdf", "") == (502, "OriginError")


async def test_server_error_on_get_after_a_good_head(aiohttp_client: Any, make_config: ConfigFactory,
                                                     servers: Any) -> None:
    async def half(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(headers={"ETag": '"v"', "Content-Length": "1000"})
        return web.Response(status=503)

    server = await servers(half)
    client = await app_for(aiohttp_client, make_config, server.url)
    assert await error_of(client, "a.jpg") == (502, "OriginError")


async def test_short_body_is_an_origin_error(aiohttp_client: Any, make_config: ConfigFactory,
                                             servers: Any) -> None:
    picture = jpeg_bytes()

    async def short(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"ETag": '"s"', "Content-Length": str(len(picture))})
        await resp.prepare(request)
        if request.method == "GET":
            await resp.write(picture[: len(picture) // 2])
            request.transport.close()                        # the connection dies mid-body
        return resp

    server = await servers(short)
    client = await app_for(aiohttp_client, make_config, server.url)
    assert await error_of(client, "a.jpg") == (502, "OriginError")


async def test_origin_refusing_head_falls_back_to_get(aiohttp_client: Any, make_config: ConfigFactory,
                                                      servers: Any) -> None:
    picture = jpeg_bytes()

    async def no_head(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=405)
        return web.Response(body=picture, headers={"ETag": '"g"'})

    server = await servers(no_head)
    client = await app_for(aiohttp_client, make_config, server.url)
    image = await preview(client, "a.jpg", "size=20", library="web")
    assert (image.width, image.height) == (20, 20)


async def test_unreachable_origin(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    client = await app_for(aiohttp_client, make_config, f"http://127.0.0.1:{free_port()}/")
    assert await error_of(client, "a.jpg") == (502, "OriginError")


async def test_corrupt_body_is_unsupported_media(aiohttp_client: Any, make_config: ConfigFactory,
                                                 http_origin: FolderOrigin, tmp_path: Path) -> None:
    client = await app_for(aiohttp_client, make_config, http_origin.url)
    assert await error_of(client, "broken.jpg") == (415, "UnsupportedMedia")
    assert renders(tmp_path / "cache") == []


# ---- timeouts -----------------------------------------------------------------------------------------


async def test_origin_that_hangs(aiohttp_client: Any, make_config: ConfigFactory, servers: Any) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    server = await servers(hang)
    client = await app_for(aiohttp_client, make_config, server.url, limits={"origin_timeout": 1})
    try:
        for query in ("?preview&size=50", ""):
            started = time.monotonic()
            assert await error_of(client, "a.jpg", query) == (504, "OriginTimeout")
            assert time.monotonic() - started < 3
    finally:
        release.set()


async def test_origin_that_stalls_mid_body(aiohttp_client: Any, make_config: ConfigFactory,
                                           servers: Any) -> None:
    picture = jpeg_bytes()
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"ETag": '"t"', "Content-Length": str(len(picture))})
        await resp.prepare(request)
        if request.method == "GET":
            await resp.write(picture[:100])
            await release.wait()
            await resp.write(picture[100:])
        return resp

    server = await servers(stall)
    client = await app_for(aiohttp_client, make_config, server.url, limits={"origin_timeout": 1})
    started = time.monotonic()
    try:
        assert await error_of(client, "a.jpg") == (504, "OriginTimeout")
        assert time.monotonic() - started < 3
    finally:
        release.set()


@pytest.mark.parametrize(("url", "location", "expected"), [
    ("http://o.test/a.jpg", "/b.jpg", "http://o.test/b.jpg"),
    ("http://o.test/a.jpg", "https://o.test/a.jpg", "https://o.test/a.jpg"),      # an upgrade: followed
    ("https://o.test/a.jpg", "https://o.test/c/a.jpg", "https://o.test/c/a.jpg"),
    ("https://o.test/a.jpg", "http://o.test/a.jpg", None),                      # a downgrade: refused
    ("https://o.test/a.jpg", "//o.test/a.jpg", "https://o.test/a.jpg"),         # scheme-relative stays https
    ("http://o.test/a.jpg", "http://other.test/a.jpg", None),
    ("http://o.test/a.jpg", "file:///etc/passwd", None),
])
def test_which_redirects_are_followed(url: str, location: str, expected: str | None) -> None:
    from proxy.errors import OriginError
    from proxy.origin import redirect_target

    if expected is None:
        with pytest.raises(OriginError):
            redirect_target(url, location, "o.test")
    else:
        assert redirect_target(url, location, "o.test") == expected
