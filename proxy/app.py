"""``create_app(config)``: routes, the middleware, and long-lived state in cleanup contexts.

Used by the server (``__main__``) and by the tests alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from aiohttp import web

from .cache import DiskCache
from .config import Config
from .decisions import Decisions
from .evict import Evictor
from .faces import warm_up
from .keys import ACCESS_LOG, CACHE, CONFIG, DECISIONS, EVICTOR, METRICS, ORIGINS, POOL, PREVIEWS, STORE
from .metrics import Metrics
from .middleware import AccessLog, make_middleware
from .origin import check_origins, fresh_spool, make_origin
from .pool import RenderPool
from .render import configure_vips
from .renderstore import RenderStore
from .routes.assets import asset_route
from .routes.docs import openapi
from .routes.files import FILE_PREFIX, file_route, mount_route
from .routes.gallery import gallery
from .routes.health import healthz, metrics
from .routes.tokens import add_token_routes
from .service import Previews
from .store import open_store

# File-system metadata (stat, rename, unlink) gets its own few threads: a stat on the hot path must
# not wait behind a queue of renders in the render pool.
IO_THREADS = 4


async def _state(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    configure_vips()
    io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="io")
    pool = RenderPool(config.limits.workers, config.limits.queue_limit, app[METRICS])
    cache = DiskCache(config.cache.dir, config.cache.max_size, io, recheck=config.cache.version_ttl)
    await cache.start()
    # the face model is loaded (once per process) and run before the first request, not during it
    await pool.on_every_thread(partial(warm_up, config.faces))
    spool = await asyncio.get_running_loop().run_in_executor(io, fresh_spool, config.cache.dir)
    origins = {lib.id: make_origin(lib.origin, config.limits, io, spool, lib.s3) for lib in config.libraries}
    app[POOL], app[CACHE], app[ORIGINS] = pool, cache, origins
    app[STORE] = open_store(config.store.url)
    renders = None if config.render_store is None else RenderStore(config.render_store, app[METRICS],
                                                                    config.limits.origin_timeout)
    app[PREVIEWS] = Previews(config, origins, cache, pool, app[METRICS], app[STORE], renders)
    app[DECISIONS] = Decisions(config.cache.version_ttl)
    app[EVICTOR] = evictor = Evictor(config.cache.dir, config.cache.max_size, io, config.cache.version_ttl,
                                     config.cache.evict_grace)
    cache.on_write = evictor.nudge
    evicting = asyncio.create_task(evictor.run())  # one process per folder sweeps: the lock's holder
    checks = asyncio.create_task(_warn_at_start(config))
    yield
    evicting.cancel()
    checks.cancel()
    for origin in origins.values():
        await origin.close()
    await app[STORE].close()
    if renders is not None:
        await renders.close()
    # finish in-flight renders (SIGTERM): the pool is drained, not cancelled
    pool.shutdown()
    io.shutdown(wait=True)
    evictor.close()


async def _warn_at_start(config: Config) -> None:
    """Say at start what will go wrong later: an unreachable origin."""
    log = logging.getLogger("proxy")
    for problem in await check_origins(config):
        log.warning(json.dumps({"event": "origin_problem", "problem": problem}))


async def _flush(access_log: AccessLog) -> None:
    access_log.flush()


def create_app(config: Config) -> web.Application:
    """The whole service for ``config``; state is created on start-up and closed on clean-up."""
    metrics_ = Metrics()
    access_log = AccessLog()
    app = web.Application(middlewares=[make_middleware(metrics_, access_log)], client_max_size=64 * 1024)
    app.on_cleanup.append(lambda _app: _flush(access_log))
    app[CONFIG] = config
    app[ACCESS_LOG] = access_log
    app[METRICS] = metrics_
    app.cleanup_ctx.append(_state)
    router = app.router
    router.add_get(FILE_PREFIX + "{rest:.+}", file_route)
    router.add_get(config.cache.asset_prefix + "{rest:.+}", asset_route)
    for lib in config.libraries:
        if lib.mount:
            router.add_get(lib.mount + "{rest:.+}", mount_route(lib))
    add_token_routes(app)
    router.add_get("/", gallery)
    router.add_get("/healthz", healthz)
    router.add_get("/metrics", metrics)
    router.add_get("/openapi.yaml", openapi)
    return app
