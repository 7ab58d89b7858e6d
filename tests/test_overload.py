"""Overload: ``render_concurrency`` renders at once, ``queue_limit`` waiting, 429 with Retry-After beyond,
never another error; a client that goes away does not cancel the render others wait for."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import aiohttp
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, renders
from test_api import metric

from proxy.app import create_app
from proxy.keys import POOL

SLOTS, QUEUE = 1, 2


def slow_source(folder: Path, name: str = "big.png") -> str:
    """A PNG large enough that one render takes a good fraction of a second (PNG: no shrink-on-load)."""
    image = pyvips.Image.gaussnoise(3000, 2000, mean=128, sigma=40).cast("uchar")
    image.bandjoin([image, image]).copy(interpretation="srgb").pngsave(str(folder / name), compression=1)
    return name


async def cold(client: TestClient, name: str, size: int) -> tuple[int, dict[str, str], bytes]:
    resp = await client.get(f"/api/v1/file/lib/-/{name}?preview&size={size}", allow_redirects=False)
    return resp.status, dict(resp.headers), await resp.read()


async def test_over_the_queue_is_429_and_nothing_else(aiohttp_client: Any, make_config: ConfigFactory,
                                                      media: Path) -> None:
    name = slow_source(media)
    config = make_config(limits={"render_concurrency": SLOTS, "queue_limit": QUEUE})
    client = await aiohttp_client(create_app(config))
    # distinct sizes: distinct cache keys, so single-flight cannot merge them
    results = await asyncio.gather(*(cold(client, name, 100 + i) for i in range(12)))
    statuses = sorted(status for status, _h, _b in results)
    assert set(statuses) <= {302, 429}, statuses
    assert statuses.count(302) >= SLOTS + QUEUE
    assert statuses.count(429) >= 12 - SLOTS - QUEUE - 2  # a render may finish while others arrive
    for status, headers, body in results:
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
            assert b'"RateLimitExceeded"' in body and headers["Content-Type"].startswith("application/json")
    # the service recovers: the refused sizes render now
    assert (await cold(client, name, 111))[0] == 302


async def test_cached_requests_are_not_refused_under_load(aiohttp_client: Any, make_config: ConfigFactory,
                                                         media: Path) -> None:
    """429 is about renders: a cached preview is answered while the queue is full."""
    name = slow_source(media)
    config = make_config(limits={"render_concurrency": SLOTS, "queue_limit": QUEUE})
    client = await aiohttp_client(create_app(config))
    assert (await cold(client, "landscape.jpg", 64))[0] == 302
    pool = client.app[POOL]
    load = [asyncio.create_task(cold(client, name, 100 + i)) for i in range(8)]
    while pool.admitted < SLOTS + QUEUE:  # until every ticket is out: the queue is full
        await asyncio.sleep(0.005)
    assert (await cold(client, "landscape.jpg", 64))[0] == 302
    assert pool.admitted == SLOTS + QUEUE  # it was still full when the cached request was answered
    assert (await cold(client, name, 99))[0] == 429  # (a render, by contrast, is refused)
    await asyncio.gather(*load)


async def test_a_client_going_away_does_not_cancel_the_render(aiohttp_client: Any,
                                                              make_config: ConfigFactory,
                                                              media: Path, tmp_path: Path) -> None:
    name = slow_source(media)
    client = await aiohttp_client(create_app(make_config()))
    url = f"/api/v1/file/lib/-/{name}?preview&size=150"
    # the impatient client hangs up long before the render is done
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError, aiohttp.ClientError):
        await client.get(url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=0.05))
    # the patient one asks for the same render meanwhile and gets it
    resp = await client.get(url, allow_redirects=False)
    assert resp.status == 302
    assert await metric(client, "preview_render_seconds_count") == 1  # one render, not cancelled and redone
    assert len(renders(tmp_path / "cache", ".png")) == 1


async def test_one_render_for_many_waiters_of_which_some_leave(aiohttp_client: Any,
                                                               make_config: ConfigFactory,
                                                               media: Path) -> None:
    name = slow_source(media)
    client = await aiohttp_client(create_app(make_config()))
    url = f"/api/v1/file/lib/-/{name}?preview&size=90"

    async def leaver() -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError, aiohttp.ClientError):
            await client.get(url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=0.1))

    async def stayer() -> int:
        return (await client.get(url, allow_redirects=False)).status

    results = await asyncio.gather(*(leaver() for _ in range(5)), *(stayer() for _ in range(10)))
    assert [r for r in results if r is not None] == [302] * 10
    assert await metric(client, "preview_render_seconds_count") == 1


class SlowOrigin:
    """An HTTP origin that sends each body in slow chunks and counts the GETs in progress at once."""

    def __init__(self, body: bytes, chunks: int = 5, pause: float = 0.05) -> None:
        self.body, self.chunks, self.pause = body, chunks, pause
        self.active = self.peak = self.gets = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": "image/jpeg", "ETag": f'"{request.path}"'}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(self.body))})
        self.gets += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            response = web.StreamResponse(headers=headers)
            response.content_length = len(self.body)
            await response.prepare(request)
            step = -(-len(self.body) // self.chunks)
            for i in range(0, len(self.body), step):
                await asyncio.sleep(self.pause)
                await response.write(self.body[i:i + step])
            await response.write_eof()
            return response
        finally:
            self.active -= 1


async def slow_origin_client(aiohttp_client: Any, aiohttp_server: Any, make_config: ConfigFactory,
                             media: Path, origin: SlowOrigin, **limits: Any) -> TestClient:
    app = web.Application()
    app.router.add_route("*", "/{name:.+}", origin.handle)
    server = await aiohttp_server(app)
    config = make_config(limits=limits, libraries=[{"id": "lib", "origin": str(server.make_url("/")),
                                                    "secret": "s"}])
    return await aiohttp_client(create_app(config))


async def test_sources_are_fetched_only_when_admitted(aiohttp_client: Any, aiohttp_server: Any,
                                                      make_config: ConfigFactory, media: Path) -> None:
    """Concurrent origin downloads <= slots + queue; a 429 comes before any byte of its source."""
    origin = SlowOrigin((media / "landscape.jpg").read_bytes())
    client = await slow_origin_client(aiohttp_client, aiohttp_server, make_config, media, origin,
                                      render_concurrency=SLOTS, queue_limit=QUEUE)
    results = await asyncio.gather(*(cold(client, f"p{i}.jpg", 64) for i in range(30)))
    statuses = [status for status, _h, _b in results]
    assert set(statuses) <= {302, 429} and 429 in statuses, statuses
    assert origin.peak <= SLOTS + QUEUE, origin.peak
    assert origin.gets == statuses.count(302)  # no body downloaded only to be thrown away
    assert all(int(h["Retry-After"]) >= 1 for status, h, _b in results if status == 429)
    assert list((make_config().cache.dir / ".spool").iterdir()) == []  # spooled sources removed


async def test_a_render_past_its_deadline_is_a_typed_503(aiohttp_client: Any, aiohttp_server: Any,
                                                         make_config: ConfigFactory, media: Path) -> None:
    origin = SlowOrigin((media / "landscape.jpg").read_bytes(), chunks=6, pause=0.1)
    client = await slow_origin_client(aiohttp_client, aiohttp_server, make_config, media, origin,
                                      render_deadline=0.2)
    status, _headers, body = await cold(client, "late.jpg", 64)
    assert status == 503 and b'"RenderTimeout"' in body, (status, body)
