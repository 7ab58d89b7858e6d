"""The store (memory and a real redis-server): the generic API, and tokens shared by two app instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis.asyncio as aredis
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, free_port

from proxy.app import create_app
from proxy.config import ConfigError
from proxy.store import RedisStore, Store, StoreUnavailable, open_store


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    url = "memory://" if request.param == "memory" else request.getfixturevalue("redis_url")
    s = open_store(url)
    yield s
    await s.close()


async def test_json_round_trip_and_delete(store: Store) -> None:
    value = {"faces": [[1.5, 2, 30, 40, 0.9]], "name": "照片 1", "ok": True, "none": None}
    assert await store.get_json("faces", "k") is None
    await store.set_json("faces", "k", value, ttl=60)
    assert await store.get_json("faces", "k") == value
    assert await store.get_json("other-ns", "k") is None  # namespaces do not collide
    assert await store.delete("faces", "k") is True
    assert await store.delete("faces", "k") is False
    assert await store.get_json("faces", "k") is None


# TTLs are read from the store (Redis' PTTL, the memory backend's expiry timer) and expiry is made to
# happen now, instead of sleeping past them on the wall clock.


async def remaining(store: Store, ns: str, key: str) -> float | None:
    """Seconds until ``(ns, key)`` expires; None when it has no expiry or does not exist."""
    full = store.key(ns, key)
    if isinstance(store, RedisStore):
        ms = await store._cache.client.pttl(full)
        return None if ms < 0 else ms / 1000
    handle = store._cache._handlers.get(full)
    return None if handle is None else handle.when() - asyncio.get_running_loop().time()


async def expire_now(store: Store, ns: str, key: str) -> None:
    """What the end of ``(ns, key)``'s TTL does, now."""
    full = store.key(ns, key)
    if isinstance(store, RedisStore):
        await store._cache.client.pexpire(full, 1)
        while await store._cache.client.exists(full):
            await asyncio.sleep(0.001)
    else:
        store._cache._handlers[full]._run()


async def test_ttl_expires_and_touch_restarts_it(store: Store) -> None:
    await store.set_json("v", "short", [1], ttl=1)
    await store.set_json("v", "kept", [2], ttl=1)
    await store.set_json("v", "forever", [3])
    assert 0 < (await remaining(store, "v", "short") or 0) <= 1
    assert await remaining(store, "v", "forever") is None
    assert await store.touch("v", "kept", 3) is True
    assert await store.touch("v", "missing", 3) is False
    assert 2 < (await remaining(store, "v", "kept") or 0) <= 3  # restarted at 3 s
    assert (await remaining(store, "v", "short") or 0) <= 1      # untouched
    await expire_now(store, "v", "short")
    assert await store.get_json("v", "short") is None
    assert await store.get_json("v", "kept") == [2]


async def test_sliding_get_restarts_the_ttl_from_the_value(store: Store) -> None:
    await store.set_json("token", "t", {"period": 3}, ttl=1)
    assert (await remaining(store, "token", "t") or 0) <= 1
    assert await store.get_json_sliding("token", "t", "period") == {"period": 3}
    assert 2 < (await remaining(store, "token", "t") or 0) <= 3  # the value's period, not the first ttl
    assert await store.get_json("token", "t") == {"period": 3}
    assert await store.get_json_sliding("token", "missing", "period") is None
    await expire_now(store, "token", "t")
    assert await store.get_json_sliding("token", "t", "period") is None


async def test_string_sets(store: Store) -> None:
    assert await store.members("idx", "u") == set()
    assert await store.add_member("idx", "u", "a") == 1
    assert await store.add_member("idx", "u", "b") == 2
    assert await store.add_member("idx", "u", "a") == 2
    assert await store.members("idx", "u") == {"a", "b"}
    await store.remove_members("idx", "u", "a", "zzz")
    await store.remove_members("idx", "u")
    assert await store.members("idx", "u") == {"b"}


async def test_redis_keeps_namespaced_json_text_not_pickle(redis_url: str) -> None:
    store = open_store(redis_url)
    assert isinstance(store, RedisStore)
    await store.set_json("faces", "abc", {"n": 1}, ttl=100)
    raw = aredis.Redis.from_url(redis_url)
    try:
        assert await raw.get("preview-proxy:faces:abc") == b'{"n":1}'
        assert 95 <= await raw.ttl("preview-proxy:faces:abc") <= 100
        await raw.set("preview-proxy:faces:bad", b"\x80\x04not json")
        assert await store.get_json("faces", "bad") is None
    finally:
        await raw.aclose()
        await store.close()


async def test_redis_down_fails_closed_with_a_json_error() -> None:
    store = open_store(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable):
        await store.get_json("token", "x")
    await store.close()


async def test_a_store_that_is_down_is_a_503_not_a_bug(aiohttp_client: Any, make_config: ConfigFactory,
                                                        media: Path) -> None:
    cfg = make_config(store={"url": f"redis://127.0.0.1:{free_port()}/0"}, cache={"sign_secret": "x" * 32},
                      libraries=[{"id": "priv", "origin": str(media), "secret": "s", "public_read": False}])
    client = await aiohttp_client(create_app(cfg))
    resp = await client.get("/api/v1/file/priv/-/landscape.jpg?preview&access_token=" + "t" * 32)
    assert resp.status == 503 and (await resp.json())["code"] == "ServiceUnavailable"


def test_config_refuses_an_unknown_store_scheme(make_config: ConfigFactory) -> None:
    with pytest.raises(ConfigError, match=r"\[store\] url"):
        make_config(store={"url": "memcached://127.0.0.1:11211"})


# ---- two app instances on one store ------------------------------------------------------------------


def _config(make_config: ConfigFactory, media: Path, url: str) -> Any:
    return make_config(cache={"sign_secret": "sign"}, store={"url": url}, libraries=[
        {"id": "priv", "origin": str(media), "secret": "priv-secret", "public_read": False}])


async def _token(client: TestClient, **extra: str) -> str:
    q = urlencode({"library_id": "priv", "library_secret": "priv-secret", **extra})
    resp = await client.get(f"/api/v1/token?{q}")
    assert resp.status == 200
    return (await resp.json())["accessToken"]


async def _use(client: TestClient, token: str) -> int:
    url = f"/api/v1/file/priv/-/tiny.jpg?preview&access_token={token}"
    resp = await client.get(url, allow_redirects=False)
    return resp.status


@pytest.fixture
async def nodes(aiohttp_client: Any, make_config: ConfigFactory, media: Path, redis_url: str
                ) -> tuple[TestClient, TestClient]:
    cfg = _config(make_config, media, redis_url)
    return await aiohttp_client(create_app(cfg)), await aiohttp_client(create_app(cfg))


async def test_token_made_on_one_node_works_on_the_other(nodes: tuple[TestClient, TestClient]) -> None:
    one, two = nodes
    t = await _token(one)
    assert await _use(two, t) == 302
    assert (await two.post(f"/api/v1/token/priv/{t}")).status == 200


async def test_revoked_on_one_node_fails_on_both(nodes: tuple[TestClient, TestClient]) -> None:
    one, two = nodes
    t = await _token(one)
    assert (await _use(one, t), await _use(two, t)) == (302, 302)
    assert (await two.delete(f"/api/v1/token/priv/{t}")).status == 204
    assert (await _use(one, t), await _use(two, t)) == (403, 403)


async def test_a_users_tokens_revoked_on_one_node_fail_on_both(nodes: tuple[TestClient, TestClient]) -> None:
    one, two = nodes
    phone = await _token(one, user_id="dave", client_id="phone")
    laptop = await _token(two, user_id="dave", client_id="laptop")
    q = urlencode({"library_secret": "priv-secret", "user_id": "dave", "client_id": "phone"})
    assert (await two.delete(f"/api/v1/token/priv?{q}")).status == 204
    assert [await _use(c, phone) for c in nodes] == [403, 403]
    assert [await _use(c, laptop) for c in nodes] == [302, 302]


async def test_use_restarts_the_period_in_redis(nodes: tuple[TestClient, TestClient], redis_url: str) -> None:
    one, two = nodes
    t = await _token(one, period="1300")
    raw = aredis.Redis.from_url(redis_url)
    try:
        key = f"preview-proxy:token:{t}"
        await raw.expire(key, 5)
        assert await _use(two, t) == 302
        assert 1290 <= await raw.ttl(key) <= 1300
        await raw.pexpire(key, 1)  # expired
        await asyncio.sleep(0.05)
        assert await _use(one, t) == 403
    finally:
        await raw.aclose()


async def test_memory_stores_are_per_process(aiohttp_client: Any, make_config: ConfigFactory,
                                             media: Path) -> None:
    cfg = _config(make_config, media, "memory://")
    one, two = await aiohttp_client(create_app(cfg)), await aiohttp_client(create_app(cfg))
    t = await _token(one)
    assert (await _use(one, t), await _use(two, t)) == (302, 403)


async def test_redis_sliding_reads_of_one_loop_turn_share_one_round_trip(redis_url: str) -> None:
    store = open_store(redis_url)
    assert isinstance(store, RedisStore)
    calls: list[list[str]] = []
    script = store._sliding

    def counting(*, keys: list[str], args: list[str]) -> Any:
        calls.append(keys)
        return script(keys=keys, args=args)

    store._sliding = counting  # type: ignore[method-assign]
    try:
        await store.set_json("token", "t", {"period": 100}, ttl=5)
        await store.set_json("token", "u", {"period": 200}, ttl=5)
        reads = [store.get_json_sliding("token", k, "period") for k in ["t"] * 10 + ["u", "missing"]]
        values = await asyncio.gather(*reads)
        assert len(calls) == 1 and len(calls[0]) == 3  # one call, each key once
        assert values == [{"period": 100}] * 10 + [{"period": 200}, None]
        assert len({id(v) for v in values[:10]}) == 10  # each caller gets its own copy
        raw = aredis.Redis.from_url(redis_url)
        assert await raw.ttl("preview-proxy:token:u") > 100  # renewed from the value's own field
        await raw.aclose()
        cancelled = asyncio.ensure_future(store.get_json_sliding("token", "t", "period"))
        kept = asyncio.ensure_future(store.get_json_sliding("token", "t", "period"))
        await asyncio.sleep(0)
        cancelled.cancel()  # a client that hung up: the others still get their answer
        assert await kept == {"period": 100}
        await store.delete("token", "t")
        assert await store.get_json_sliding("token", "t", "period") is None
    finally:
        await store.close()


async def test_redis_down_fails_every_batched_read() -> None:
    store = open_store(f"redis://127.0.0.1:{free_port()}/0")
    results = await asyncio.gather(*(store.get_json_sliding("token", str(i), "period") for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results)
    await store.close()
