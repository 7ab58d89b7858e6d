"""Typed application keys: the long-lived state every route reads (created in ``app.py``)."""

from __future__ import annotations

from aiohttp import web

from .cache import DiskCache
from .config import Config
from .decisions import Decisions
from .evict import Evictor
from .metrics import Metrics
from .middleware import AccessLog
from .origin import Origin
from .pool import RenderPool
from .service import Previews
from .store import Store

CONFIG = web.AppKey("config", Config)
METRICS = web.AppKey("metrics", Metrics)
CACHE = web.AppKey("cache", DiskCache)
POOL = web.AppKey("pool", RenderPool)
PREVIEWS = web.AppKey("previews", Previews)
ORIGINS = web.AppKey("origins", dict[str, Origin])
STORE = web.AppKey("store", Store)  # tokens, source versions, face boxes (memory or Redis)
DECISIONS = web.AppKey("decisions", Decisions)
EVICTOR = web.AppKey("evictor", Evictor)  # the cache folder's size bound (one sweeping process)
ACCESS_LOG = web.AppKey("access_log", AccessLog)  # flushed at clean-up (and by tests, to read it now)
