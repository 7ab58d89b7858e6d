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

from .errors import ApiError

PREFIX = "preview-proxy"
# Redis: the read and the TTL renewal of a sliding entry in one round trip (and atomically, so a
# concurrent delete cannot be undone by a late EXPIRE: EXPIRE on a missing key is a no-op).
_SLIDING_GET = """
local v = redis.call('GET', KEYS[1])
if v then
  local ok, d = pcall(cjson.decode, v)
  if ok and type(d) == 'table' then
    local t = tonumber(d[ARGV[1]])
    if t and t > 0 then redis.call('EXPIRE', KEYS[1], math.floor(t)) end
  end
end
return v
"""
_REDIS_TIMEOUT = 2.0  # seconds: a store that does not answer fails the request, it does not hang it
_REDIS_CONNECTIONS = 32


class StoreUnavailable(ApiError):
    """The store did not answer: access cannot be decided, so it is refused (fail closed)."""

    default_message = "the token store is unavailable"


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
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def get_json_sliding(self, ns: str, key: str, ttl_field: str) -> Any | None:
        """As ``Store.get_json_sliding``; concurrent reads of one key share one round trip (a page of
        thumbnails carries one token: 50 requests at once cost one Redis call, not 50)."""
        full = self.key(ns, key)
        shared = self._inflight.get(full)
        if shared is None:
            shared = asyncio.ensure_future(self._redis(self._sliding(keys=[full], args=[ttl_field])))
            self._inflight[full] = shared
            shared.add_done_callback(lambda f: self._settled(full, f))
        # shield: one waiter's cancellation (a client that hung up) must not cancel the others' read
        return _loads(await asyncio.shield(shared))

    def _settled(self, full: str, future: asyncio.Future[Any]) -> None:
        if self._inflight.get(full) is future:
            del self._inflight[full]
        if not future.cancelled():
            future.exception()  # retrieved: no "never retrieved" warning when every waiter left

    async def delete(self, ns: str, key: str) -> bool:
        # a read started before this delete must not be joined by requests that come after it
        self._inflight.pop(self.key(ns, key), None)
        return await super().delete(ns, key)

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
