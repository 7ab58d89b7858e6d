"""``/healthz`` and ``/metrics``."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..keys import CACHE, EVICTOR, METRICS
from ..metrics import exposition


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    m = request.app[METRICS]
    evictor = request.app[EVICTOR]
    # the whole folder's, as of the last sweep (whichever worker made it)
    usage = await asyncio.get_running_loop().run_in_executor(request.app[CACHE].io, evictor.usage)
    m.cache_bytes.set(usage.bytes)
    m.cache_files.set(usage.files)
    body = exposition(m)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
