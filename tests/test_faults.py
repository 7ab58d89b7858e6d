"""A misbehaving HTTP origin: each fault gets its status within the configured timeout, nothing hangs,
and no file descriptor or origin connection is left behind.

The fault origin is a raw asyncio server on 127.0.0.1 (it must be able to lie in ways an HTTP
framework would not let it); the redirect goes to 127.0.0.2, another loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, free_port, gradient

from proxy.app import create_app

TIMEOUT = 1.5                      # limits.origin_timeout in these tests
SLACK = 1.0                        # scheduling on a busy 2-core box
CAP = 1024 * 1024                  # limits.max_source_bytes
GOOD = gradient(320, 240).jpegsave_buffer(Q=85)

# path -> the status the proxy must answer
EXPECT = {
    "ok.jpg": 302, "hang.jpg": 504, "slowheaders.jpg": 504, "trickle.jpg": 504, "stall.jpg": 504,
    "e500.jpg": 502, "e503.jpg": 502, "reset.jpg": 502, "reset-mid.jpg": 502, "garbage.jpg": 502,
    "lying.jpg": 502, "huge.jpg": 413, "endless.jpg": 413, "redirect.jpg": 502, "redirect-same.jpg": 302,
    "headbody.jpg": 302, "nothere.jpg": 404,
}


class FaultOrigin:
    """One fault per file name; HEAD is answered like GET without the body (except ``headbody``)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self.port = free_port()
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.open):
            writer.transport.abort()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open.add(writer)
        try:
            line = (await reader.readline()).decode(errors="replace")
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            method, _, rest = line.partition(" ")
            name = rest.split(" ")[0].split("?")[0].rsplit("/", 1)[-1]
            await self._answer(name, method == "HEAD", reader, writer)
            await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.open.discard(writer)
            writer.close()

    async def _answer(self, name: str, head: bool, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        def status(code: str, length: int | None, extra: str = "") -> None:
            size = f"Content-Length: {length}\r\n" if length is not None else ""
            writer.write(f"HTTP/1.1 {code}\r\nContent-Type: image/jpeg\r\n{size}{extra}"
                         "Connection: close\r\n\r\n".encode())

        def body(data: bytes) -> None:
            if not head:
                writer.write(data)

        match name:
            case "ok.jpg":
                status("200 OK", len(GOOD), 'ETag: "v1"\r\n')
                body(GOOD)
            case "headbody.jpg":  # a server that sends the body after a HEAD answer too
                status("200 OK", len(GOOD), 'ETag: "v1"\r\n')
                writer.write(GOOD)
            case "hang.jpg":  # never answers; gone when the proxy hangs up
                await reader.read()
            case "slowheaders.jpg":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(reader.read(), 60)
            case "trickle.jpg":  # one byte a second: each read is in time, the whole is not
                status("200 OK", len(GOOD))
                if not head:
                    for i in range(len(GOOD)):
                        writer.write(GOOD[i:i + 1])
                        await writer.drain()
                        await asyncio.sleep(1)
            case "stall.jpg":  # half the body, then silence with the connection open
                status("200 OK", len(GOOD))
                if not head:
                    writer.write(GOOD[: len(GOOD) // 2])
                    await writer.drain()
                    await reader.read()
            case "e500.jpg" | "e503.jpg":
                writer.write(f"HTTP/1.1 {name[1:4]} Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
                             "oops".encode())
            case "reset.jpg":
                writer.transport.abort()
            case "reset-mid.jpg":
                status("200 OK", len(GOOD))
                if not head:
                    writer.write(GOOD[:2000])
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.transport.abort()
            case "garbage.jpg":
                writer.write(b"\x00\x01 this is not HTTP at all\r\n\r\n")
            case "lying.jpg":  # says twice the bytes it sends, then closes
                status("200 OK", len(GOOD) * 2)
                body(GOOD)
            case "huge.jpg":  # says and streams 2 GiB
                status("200 OK", 2 * 1024**3)
                if not head:
                    chunk = GOOD * 8
                    for _ in range(2 * 1024**3 // len(chunk)):
                        writer.write(chunk)
                        await writer.drain()
            case "endless.jpg":  # no length at all: the cap is found while streaming
                status("200 OK", None)
                if not head:
                    chunk = GOOD * 8
                    while True:
                        writer.write(chunk)
                        await writer.drain()
            case "redirect.jpg":
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/latest/meta-data\r\n"
                             b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            case "redirect-same.jpg":
                writer.write(b"HTTP/1.1 301 Moved\r\nLocation: /ok.jpg\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
            case _:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
async def fault_origin() -> AsyncIterator[FaultOrigin]:
    origin = FaultOrigin()
    await origin.start()
    yield origin
    await origin.stop()


@pytest.fixture
async def web_client(aiohttp_client: Any, make_config: ConfigFactory, fault_origin: FaultOrigin
                     ) -> TestClient:
    config = make_config(
        limits={"origin_timeout": TIMEOUT, "max_source_bytes": CAP},
        cache={"version_ttl": 0},  # every request goes to the origin: each one meets the fault
        libraries=[{"id": "web", "origin": fault_origin.url, "secret": "s"},
                   {"id": "dead", "origin": f"http://127.0.0.1:{free_port()}/", "secret": "s"}])
    return await aiohttp_client(create_app(config))


async def timed(client: TestClient, path: str) -> tuple[int, str, float]:
    started = time.monotonic()
    resp = await client.get(path, allow_redirects=False)
    body = await resp.json() if resp.status != 302 else {}
    return resp.status, body.get("code", ""), time.monotonic() - started


async def one_round(client: TestClient) -> list[str]:
    """Every fault at once; the failures, described."""
    names = list(EXPECT)
    results = await asyncio.gather(*(timed(client, f"/api/v1/file/web/-/{n}?preview&size=64") for n in names))
    failures = []
    for name, (status, code, elapsed) in zip(names, results, strict=True):
        if status != EXPECT[name] or elapsed > TIMEOUT + SLACK:
            failures.append(f"{name}: {status} {code} after {elapsed:.2f}s (want {EXPECT[name]})")
    return failures


def origin_sockets(port: int) -> int:
    """This process' TCP connections to the fault origin (the proxy's side of them)."""
    return sum(1 for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_each_fault_gets_its_status_in_time(web_client: TestClient, fault_origin: FaultOrigin) -> None:
    failures = await one_round(web_client)
    assert not failures, "\n".join(failures)


async def test_no_descriptor_or_connection_leaks(web_client: TestClient, fault_origin: FaultOrigin) -> None:
    assert not await one_round(web_client)  # warm-up: thread pools, the session, the cache folders
    await asyncio.sleep(0.2)
    fds = open_fds()
    for _ in range(2):
        assert not await one_round(web_client)
    await asyncio.sleep(0.2)
    assert origin_sockets(fault_origin.port) == 0
    assert open_fds() <= fds + 2, f"{open_fds() - fds} descriptors more after two rounds of faults"


async def test_refused_connection_is_502(web_client: TestClient) -> None:
    status, code, elapsed = await timed(web_client, "/api/v1/file/dead/-/a.jpg?preview&size=64")
    assert (status, code) == (502, "OriginError") and elapsed < TIMEOUT


async def test_download_link_and_head_see_the_fault_too(web_client: TestClient) -> None:
    for path, want in (("hang.jpg", 504), ("e500.jpg", 502), ("redirect.jpg", 502)):
        status, _code, elapsed = await timed(web_client, f"/api/v1/file/web/-/{path}")
        assert status == want and elapsed < TIMEOUT + SLACK, (path, status, elapsed)
        resp = await web_client.head(f"/api/v1/file/web/-/{path}?preview", allow_redirects=False)
        assert resp.status == want and await resp.read() == b""


async def test_timeout_bounds_the_whole_body(tmp_path: Path) -> None:
    """The proof for a trickling origin: ClientTimeout(total) ends a body that never stalls long."""
    from concurrent.futures import ThreadPoolExecutor

    from proxy.config import LimitsConfig
    from proxy.errors import OriginTimeout
    from proxy.origin import HttpOrigin, SourceStat

    origin_server = FaultOrigin()
    await origin_server.start()
    origin = HttpOrigin(origin_server.url, LimitsConfig(origin_timeout=1.0), ThreadPoolExecutor(1), tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(OriginTimeout):
            await origin.fetch("", "trickle.jpg", SourceStat(-1, ""))
        assert 0.9 < time.monotonic() - started < 1.5
        assert list(tmp_path.iterdir()) == []  # the part spooled so far is gone
    finally:
        await origin.close()
        await origin_server.stop()
