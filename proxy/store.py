"""The shared store (tokens, source versions, face detections) on aiocache: memory or Redis.

``store.url = "memory://"`` keeps everything in this process; ``redis://[:password@]host:port/db``
shares it between processes and nodes, so a token made on one node works on all and a revoked one
fails on all at once.

Keys are ``preview-proxy:{ns}:{key}``; values are JSON text, written and read here explicitly
(never pickle: a value may hold strings that came from a request). A value that does not parse is
treated as missing. Every entry has a TTL except set members, which their owner prunes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import unquote, urlsplit

from aiocache import SimpleMemoryCache
from aiocache.serializers import StringSerializer

from .errors import StoreUnavailable

PREFIX = "preview-proxy"
# Redis: reads of sliding entries and their TTL renewal, for every key of a batch, in one round trip
# (and atomically per key, so a concurrent delete cannot be undone by a late EXPIRE: EXPIRE on a
# missing key is a no-op). ARGV[1] names the value's field holding its TTL in seconds.
_SLIDING_GET = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  out[i] = v
  if v then
    local ok, d = pcall(cjson.decode, v)
    if ok and type(d) == 'table' then
      local t = tonumber(d[ARGV[1]])
      if t and t > 0 then redis.call('EXPIRE', key, math.floor(t)) end
    end
  end
end
return out
"""
_BATCH = 256  # keys per script call at most
_REDIS_TIMEOUT = 2.0  # seconds: a store that does not answer fails the request, it does not hang it
_REDIS_CONNECTIONS = 32


def _loads(raw: Any) -> Any | None:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return None


class Store:
    """The in-process store (``memory://``); ``RedisStore`` shares the same API across processes.

    Stable API (others build on it): ``get_json``, ``set_json``, ``delete``, ``touch``,
    ``get_json_sliding``, and the string sets ``add_member`` / ``members`` / ``remove_members``.
    """

    def __init__(self, cache: Any | None = None) -> None:
        # timeout=None: aiocache would otherwise wrap every in-memory dict access in wait_for
        self._cache = cache if cache is not None else SimpleMemoryCache(serializer=StringSerializer(),
                                                                         timeout=None)
        self._sets: dict[str, set[str]] = {}

    @staticmethod
    def key(ns: str, key: str) -> str:
        return f"{PREFIX}:{ns}:{key}"

    async def get_json(self, ns: str, key: str) -> Any | None:
        """The value stored under ``(ns, key)``, or None when missing, expired or not JSON."""
        try:
            return _loads(await self._call("get", self.key(ns, key)))
        except UnicodeDecodeError:  # not ours (aiocache decodes before we see it): treat as missing
            return None

    async def set_json(self, ns: str, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` (anything ``json.dumps`` takes) for ``ttl`` seconds (None: no expiry)."""
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        await self._call("set", self.key(ns, key), text, ttl=_ttl(ttl))

    async def delete(self, ns: str, key: str) -> bool:
        """Remove ``(ns, key)``; True when it existed."""
        return bool(await self._call("delete", self.key(ns, key)))

    async def touch(self, ns: str, key: str, ttl: float) -> bool:
        """Restart the TTL of ``(ns, key)`` at ``ttl`` seconds; False when it does not exist."""
        return bool(await self._call("expire", self.key(ns, key), _ttl(ttl)))

    async def get_json_sliding(self, ns: str, key: str, ttl_field: str) -> Any | None:
        """``get_json``, and the entry's TTL restarts at ``value[ttl_field]`` seconds (a sliding expiry)."""
        value = await self.get_json(ns, key)
        if isinstance(value, dict) and isinstance(value.get(ttl_field), int | float):
            await self._cache.expire(self.key(ns, key), _ttl(value[ttl_field]))
        return value

    async def add_member(self, ns: str, key: str, member: str) -> int:
        """Add ``member`` to the string set ``(ns, key)``; the set's size after."""
        members = self._sets.setdefault(self.key(ns, key), set())
        members.add(member)
        return len(members)

    async def members(self, ns: str, key: str) -> set[str]:
        """The members of the string set ``(ns, key)`` (empty when missing)."""
        return set(self._sets.get(self.key(ns, key), ()))

    async def remove_members(self, ns: str, key: str, *members: str) -> None:
        full = self.key(ns, key)
        remaining = self._sets.get(full)
        if remaining is not None:
            remaining.difference_update(members)
            if not remaining:
                del self._sets[full]

    async def close(self) -> None:
        await self._cache.close()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self._cache, method)(*args, **kwargs)


def _ttl(ttl: float | None) -> int | None:
    # whole seconds: aiocache's Redis backend turns a float TTL into PSETEX milliseconds, an int into
    # SETEX seconds; keep both backends on the same unit
    return None if ttl is None else max(1, int(ttl))


class RedisStore(Store):
    """The store on Redis (aiocache's ``RedisCache`` on ``redis.asyncio``): shared by every node."""

    def __init__(self, url: str) -> None:
        from aiocache import RedisCache
        from redis.asyncio import BlockingConnectionPool
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError, TimeoutError)
        parts = urlsplit(url)
        db = (parts.path or "/0").strip("/") or "0"
        cache = RedisCache(endpoint=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=int(db),
                           password=unquote(parts.password) if parts.password else None,
                           ssl=parts.scheme == "rediss", serializer=StringSerializer(), timeout=None,
                           create_connection_timeout=_REDIS_TIMEOUT,
                           # bounded: a burst of requests queues for a connection instead of opening
                           # one each (redis-py's default pool is unbounded)
                           connection_pool_class=BlockingConnectionPool, pool_max_size=_REDIS_CONNECTIONS,
                           connection_pool_kwargs={"socket_timeout": _REDIS_TIMEOUT,
                                                   "timeout": _REDIS_TIMEOUT})
        super().__init__(cache)
        self._client = cache.client
        self._sliding = self._client.register_script(_SLIDING_GET)
        self._tasks: set[asyncio.Task[None]] = set()
        # (ttl_field, full key, waiter) of reads queued during this turn of the event loop
        self._pending: list[tuple[str, str, asyncio.Future[Any]]] = []

    async def get_json_sliding(self, ns: str, key: str, ttl_field: str) -> Any | None:
        """As ``Store.get_json_sliding``. The reads queued in one turn of the event loop go to Redis
        as one script call (a page of 50 thumbnails: one round trip, not 50). Each read is still sent
        after its request arrived, so a revocation that completed before is always seen."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((ttl_field, self.key(ns, key), waiter))
        return _loads(await waiter)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        by_field: dict[str, list[tuple[str, asyncio.Future[Any]]]] = {}
        for ttl_field, full, waiter in pending:
            by_field.setdefault(ttl_field, []).append((full, waiter))
        for ttl_field, reads in by_field.items():
            for i in range(0, len(reads), _BATCH):
                task = asyncio.ensure_future(self._read_batch(ttl_field, reads[i:i + _BATCH]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _read_batch(self, ttl_field: str, reads: list[tuple[str, asyncio.Future[Any]]]) -> None:
        keys = list(dict.fromkeys(full for full, _ in reads))  # one key asked twice: read once
        try:
            values = dict(zip(keys, await self._redis(self._sliding(keys=keys, args=[ttl_field])),
                              strict=True))
        except Exception as exc:  # every waiter gets the failure (StoreUnavailable: fail closed)
            for _, waiter in reads:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for full, waiter in reads:
            if not waiter.done():  # a waiter whose client hung up was cancelled
                waiter.set_result(values[full])

    async def close(self) -> None:
        for task in list(self._tasks):
            await asyncio.wait([task])
        await super().close()

    async def add_member(self, ns: str, key: str, member: str) -> int:
        full = self.key(ns, key)
        await self._redis(self._client.sadd(full, member))
        return int(await self._redis(self._client.scard(full)))

    async def members(self, ns: str, key: str) -> set[str]:
        raw = await self._redis(self._client.smembers(self.key(ns, key)))
        return {m.decode() if isinstance(m, bytes) else str(m) for m in raw}

    async def remove_members(self, ns: str, key: str, *members: str) -> None:
        if members:
            await self._redis(self._client.srem(self.key(ns, key), *members))

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._redis(getattr(self._cache, method)(*args, **kwargs))

    async def _redis(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except self._errors as exc:
            raise StoreUnavailable() from exc


def open_store(url: str) -> Store:
    """The store for ``[store] url``: ``memory://`` or ``redis://host:port/db``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return Store()
    if scheme in ("redis", "rediss"):
        return RedisStore(url)
    raise ValueError(f"store url: expected memory:// or redis://host:port/db, got scheme {scheme!r}")
