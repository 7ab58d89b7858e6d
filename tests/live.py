"""The real app served on 127.0.0.1 from a background thread, for tools that want a URL
(hypothesis over raw HTTP, schemathesis) rather than an in-loop test client."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web
from conftest import free_port

from proxy.app import create_app
from proxy.config import Config


class LiveServer:
    """``create_app(config)`` on a free port, its own event loop in a daemon thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(self.config), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> LiveServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
