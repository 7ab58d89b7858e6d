"""Originals streamed through the service (download links of an HTTP origin): the request id is on
the response, an origin that fails mid-stream breaks the client's transfer (never a whole-looking short
200) and is logged for what happened, and the origin's stream is closed on HEAD and on a client that
hangs up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, log_lines
from test_faults import GOOD, FaultOrigin, origin_sockets

from proxy.app import create_app


@pytest.fixture
async def origin() -> AsyncIterator[FaultOrigin]:
    server = FaultOrigin()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(aiohttp_client: Any, make_config: ConfigFactory, origin: FaultOrigin) -> TestClient:
    config = make_config(libraries=[{"id": "web", "origin": origin.url, "secret": "s"}])
    return await aiohttp_client(create_app(config))


async def original_link(client: TestClient, name: str) -> str:
    resp = await client.get(f"/api/v1/file/web/-/{name}", allow_redirects=False)
    assert resp.status == 302, await resp.text()
    return resp.headers["Location"]


async def no_origin_connection(origin: FaultOrigin) -> None:
    for _ in range(200):
        if origin_sockets(origin.port) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{origin_sockets(origin.port)} connection(s) to the origin left open")


async def test_a_streamed_original_carries_the_request_id(client: TestClient, origin: FaultOrigin) -> None:
    resp = await client.get(await original_link(client, "ok.jpg"), headers={"X-Request-Id": "stream-id-0001"})
    assert resp.status == 200 and await resp.read() == GOOD
    assert resp.headers.get("X-Request-Id") == "stream-id-0001"


async def test_an_origin_failing_mid_stream_breaks_the_transfer(client: TestClient, origin: FaultOrigin,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy")
    resp = await client.get(await original_link(client, "reset-mid.jpg"))
    assert resp.status == 200  # the status line had gone out before the origin failed
    with pytest.raises(aiohttp.ClientPayloadError):  # a broken transfer, not a short file
        async with asyncio.timeout(30):  # (rather than a transfer that never ends)
            await resp.read()
    line = [x for x in await log_lines(client, caplog) if x["path"].startswith("/_assets/o/")][-1]
    assert line["status"] == 200 and line["aborted"] == "OriginError", line
    assert "stream_aborted" in caplog.text and "OriginError" in caplog.text
    await no_origin_connection(origin)


async def test_head_closes_the_origin_stream(client: TestClient, origin: FaultOrigin) -> None:
    link = await original_link(client, "endless.jpg")  # an origin that would send forever
    resp = await client.head(link)
    assert resp.status == 200 and "X-Request-Id" in resp.headers
    await no_origin_connection(origin)


async def test_a_client_that_hangs_up_closes_the_origin_stream(client: TestClient, origin: FaultOrigin,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy")
    link = await original_link(client, "endless.jpg")
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {link} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    async with asyncio.timeout(30):
        await reader.readexactly(256 * 1024)  # streaming
    writer.transport.abort()
    await no_origin_connection(origin)
    assert "unhandled error" not in caplog.text  # a client leaving is no bug
