"""``proxy.cache`` and ``proxy.evict``: keys, atomic writes, start-up clean-up, one evictor per folder (LRU
bound, grace), single-flight; and through the app."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory

from proxy.app import create_app
from proxy.cache import TMP_PREFIX, DiskCache, cache_key, key_path
from proxy.evict import Evictor, Usage
from proxy.keys import EVICTOR


@pytest.fixture
async def io() -> AsyncIterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True)


def files_under(root: Path) -> list[Path]:
    """The renders (not the folder's .locks and .spool)."""
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not p.relative_to(root).parts[0].startswith("."))


def rel_of(n: int) -> str:
    return key_path(cache_key("lib", "-", f"{n}.jpg", "v1", "s200", "jpeg"), "jpeg")


# ---- keys -------------------------------------------------------------------------------------------


def test_keys_and_paths() -> None:
    key = cache_key("lib", "-", "a.jpg", "v1", "s200", "jpeg")
    assert len(key) == 40 and all(c in "0123456789abcdef" for c in key)
    assert key == cache_key("lib", "-", "a.jpg", "v1", "s200", "jpeg")
    variants = [("lib", "-", "a.jpg", "v2", "s200", "jpeg"), ("lib", "-", "a.jpg", "v1", "s201", "jpeg"),
                ("lib2", "-", "a.jpg", "v1", "s200", "jpeg"), ("lib", "sp", "a.jpg", "v1", "s200", "jpeg"),
                ("lib", "-", "b.jpg", "v1", "s200", "jpeg"), ("lib", "-", "a.jpg", "v1", "s200", "png"),
                # parts are separated: moving a character from one part to the next is another key
                ("li", "b-", "a.jpg", "v1", "s200", "jpeg"), ("lib", "-", "照片.jpg", "v1", "s200", "jpeg")]
    others = {cache_key(*v) for v in variants}
    assert key not in others and len(others) == 8
    assert key_path(key, "png") == f"{key[:2]}/{key[2:4]}/{key}.png"


# ---- writes -----------------------------------------------------------------------------------------


async def test_put_is_atomic_and_replaces(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    cache = DiskCache(tmp_path / "c", 10 * 1024**2, io)
    await cache.start()
    rel = rel_of(1)
    await cache.put(rel, b"A" * 1000)
    assert (tmp_path / "c" / rel).read_bytes() == b"A" * 1000
    assert await cache.has(rel)
    with open(tmp_path / "c" / rel, "rb") as reader:    # a reader of the old file keeps the whole old file
        await cache.put(rel, b"B" * 3000)
        assert reader.read() == b"A" * 1000
    assert (tmp_path / "c" / rel).read_bytes() == b"B" * 3000
    assert [p.name for p in files_under(tmp_path / "c")] == [Path(rel).name]   # no temp file left


async def test_failed_write_leaves_nothing(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    cache = DiskCache(tmp_path / "c", 10 * 1024**2, io)
    await cache.start()
    with pytest.raises(TypeError):
        await cache.put(rel_of(1), "not bytes")  # type: ignore[arg-type]
    assert files_under(tmp_path / "c") == []
    assert not await cache.has(rel_of(1))


async def test_start_removes_stale_temp_files_and_indexes_renders(tmp_path: Path,
                                                                  io: ThreadPoolExecutor) -> None:
    root = tmp_path / "c"
    rel = rel_of(1)
    (root / rel).parent.mkdir(parents=True)
    (root / rel).write_bytes(b"x" * 500)
    stale = [root / Path(rel).parent / f"{TMP_PREFIX}{Path(rel).name}.123.abcd", root / f"{TMP_PREFIX}x"]
    for p in stale:
        p.write_bytes(b"half a file")
    cache = DiskCache(root, 10 * 1024**2, io)
    await cache.start()
    assert not any(p.exists() for p in stale)
    assert files_under(root) == [root / rel]
    assert await cache.has(rel)


async def test_start_creates_the_folder(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    cache = DiskCache(tmp_path / "a" / "b", 10 * 1024**2, io)
    await cache.start()
    assert (tmp_path / "a" / "b").is_dir()


# ---- the bound ----------------------------------------------------------------------------------------


def stored(root: Path, n: int, size: int, used: float) -> Path:
    """A render of ``size`` bytes last used at ``used`` (its access time)."""
    p = root / rel_of(n)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(bytes(size))
    os.utime(p, (used, 1_000_000))
    return p


def test_the_evictor_deletes_least_recently_used_to_90_percent(tmp_path: Path, io: ThreadPoolExecutor
                                                               ) -> None:
    root = tmp_path / "c"
    evictor = Evictor(root, 10_000, io, recheck=1.0, margin=0.0)  # grace: 2 s
    now = 2_000_000.0
    paths = [stored(root, n, 2000, used=now - 100 + n) for n in range(5)]
    assert evictor.sweep(now) == Usage(5, 10_000, 0)  # at the bound, not over
    os.utime(paths[0], (now - 10, 1_000_000))         # used again: 1 is now the least recently used
    stored(root, 5, 2000, used=now - 50)
    usage = evictor.sweep(now)
    assert usage.bytes <= 9000 and usage.evicted == 2 and usage.files == 4
    assert not paths[1].exists() and not paths[2].exists() and paths[0].exists()
    assert sum(p.stat().st_size for p in files_under(root)) == usage.bytes
    assert evictor.usage() == usage  # what every worker's /metrics reads


def test_a_render_used_within_the_grace_period_is_never_evicted(tmp_path: Path, io: ThreadPoolExecutor
                                                                ) -> None:
    root = tmp_path / "c"
    evictor = Evictor(root, 10_000, io, recheck=5.0, margin=10.0)  # grace: 20 s
    now = 2_000_000.0
    old = stored(root, 1, 3000, used=now - 60)
    fresh = [stored(root, n, 6000, used=now - 5) for n in (2, 3)]  # just answered in a 302
    usage = evictor.sweep(now)
    assert not old.exists() and all(p.exists() for p in fresh)
    assert usage.bytes == 12_000  # over the bound: it gives way rather than break a 302
    assert evictor.sweep(now + 30).bytes <= 9000  # once past the grace period, they may go


async def test_has_marks_a_render_as_used(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    root = tmp_path / "c"
    cache = DiskCache(root, 10_000, io, recheck=0)
    p = stored(root, 1, 100, used=1_000_000)
    assert await cache.has(rel_of(1))
    assert p.stat().st_atime > 1_000_000 + 1000 and p.stat().st_mtime == 1_000_000  # mtime (ETag) stays


def test_one_evictor_per_folder_and_a_successor_when_it_dies(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    root = tmp_path / "c"
    first, second = Evictor(root, 10_000, io, 1.0), Evictor(root, 10_000, io, 1.0)
    assert first._lead() and not second._lead()
    assert first._lead()  # still its own
    first.close()         # its process ended (the kernel drops the lock, kill -9 included)
    assert second._lead()
    second.close()


async def test_deleting_the_folder_is_safe(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    root = tmp_path / "c"
    cache = DiskCache(root, 10 * 1024**2, io, recheck=0)
    await cache.start()
    await cache.put(rel_of(1), b"x" * 100)
    shutil.rmtree(root)
    assert not await cache.has(rel_of(1))
    await cache.put(rel_of(1), b"y" * 100)      # the folder comes back
    assert (root / rel_of(1)).read_bytes() == b"y" * 100


# ---- single-flight ------------------------------------------------------------------------------------


async def test_once_runs_once_for_concurrent_callers(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    cache = DiskCache(tmp_path, 10**7, io)
    runs = 0
    gate = asyncio.Event()

    async def make() -> str:
        nonlocal runs
        runs += 1
        await gate.wait()
        return "done"

    waiters = [asyncio.create_task(cache.once("k", make)) for _ in range(50)]
    await asyncio.sleep(0.01)
    assert cache.in_flight == 1 and runs == 1
    gate.set()
    assert await asyncio.gather(*waiters) == ["done"] * 50
    assert runs == 1 and cache.in_flight == 0
    assert await cache.once("k", make) == "done" and runs == 2   # a later call is a new flight
    other = await asyncio.gather(cache.once("a", make), cache.once("b", make))
    assert other == ["done", "done"] and runs == 4               # keys do not share flights


async def test_once_gives_every_waiter_the_error(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    cache = DiskCache(tmp_path, 10**7, io)
    runs = 0

    async def fail() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        raise ValueError("bad source")

    results = await asyncio.gather(*(cache.once("k", fail) for _ in range(10)), return_exceptions=True)
    assert runs == 1 and all(isinstance(r, ValueError) for r in results)
    assert cache.in_flight == 0


async def test_once_is_shielded_from_a_cancelled_waiter(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    cache = DiskCache(tmp_path, 10**7, io)
    finished = asyncio.Event()
    gate = asyncio.Event()

    async def make() -> int:
        await gate.wait()
        finished.set()
        return 42

    first = asyncio.create_task(cache.once("k", make))
    second = asyncio.create_task(cache.once("k", make))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    assert await second == 42 and finished.is_set()
    # the last waiter gone: the work still completes (its render lands in the cache for the next one)
    gate.clear()
    finished.clear()
    lone = asyncio.create_task(cache.once("k2", make))
    await asyncio.sleep(0.01)
    lone.cancel()
    gate.set()
    await asyncio.wait_for(finished.wait(), 1)


# ---- through the app ----------------------------------------------------------------------------------


def noisy(folder: Path, count: int) -> None:
    """Incompressible PNGs (~150 KB each) so that a few renders fill a 1 MiB cache."""
    import numpy as np
    import pyvips

    rng = np.random.default_rng(7)
    for n in range(count):
        arr = rng.integers(0, 255, (220, 220, 3), dtype=np.uint8)
        pyvips.Image.new_from_array(arr).copy(interpretation="srgb").pngsave(str(folder / f"noise{n}.png"))


async def test_app_cache_stays_bounded(aiohttp_client: Any, make_config: ConfigFactory, media: Path,
                                       tmp_path: Path) -> None:
    noisy(media, 16)
    config = make_config(cache={"max_size": "1MiB", "version_ttl": 0.01, "evict_grace": 0})
    client: TestClient = await aiohttp_client(create_app(config))
    for n in range(16):
        resp = await client.get(f"/api/v1/file/lib/-/noise{n}.png?preview", allow_redirects=False)
        assert resp.status == 302
        await asyncio.sleep(0.05)  # past the grace period (2 x version_ttl)
    evictor = client.server.app[EVICTOR]
    usage = evictor.sweep()
    assert usage.bytes <= 1024**2 and usage.evicted > 0
    assert sum(p.stat().st_size for p in files_under(tmp_path / "cache")) == usage.bytes
    assert len(files_under(tmp_path / "cache")) < 16
    # every render still resolves: an evicted one is made again from its URL
    for n in range(16):
        resp = await client.get(f"/api/v1/file/lib/-/noise{n}.png?preview", allow_redirects=False)
        asset = await client.get(resp.headers["Location"])
        assert asset.status == 200 and asset.headers["Content-Type"] == "image/png"


async def test_app_cache_folder_deleted(aiohttp_client: Any, make_config: ConfigFactory,
                                        tmp_path: Path) -> None:
    client: TestClient = await aiohttp_client(create_app(make_config(cache={"version_ttl": 0.05})))
    url = "/api/v1/file/lib/-/landscape.jpg?preview&size=100"
    first = await client.get(url, allow_redirects=False)
    assert (await client.get(first.headers["Location"])).status == 200
    shutil.rmtree(tmp_path / "cache")
    await asyncio.sleep(0.1)
    again = await client.get(url, allow_redirects=False)
    assert again.status == 302 and again.headers["Location"] == first.headers["Location"]
    asset = await client.get(again.headers["Location"])
    assert asset.status == 200 and asset.headers["Content-Type"] == "image/jpeg"


async def never_done() -> bool:
    return False


async def test_a_render_lock_is_held_until_released(tmp_path: Path, io: ThreadPoolExecutor) -> None:
    from proxy.cache import FileLock

    first, second = FileLock(tmp_path, "k" * 64), FileLock(tmp_path, "k" * 64)
    assert await first.acquire(io, never_done)
    assert not await second.acquire(io, never_done, timeout=0.05)  # held: the waiter gives up
    await first.release(io)
    assert await second.acquire(io, never_done, timeout=1)
    await second.release(io)


async def test_a_cancelled_release_still_unlocks(tmp_path: Path) -> None:
    import threading

    from proxy.cache import FileLock

    with ThreadPoolExecutor(1) as pool, ThreadPoolExecutor(1) as other_pool:
        lock = FileLock(tmp_path, "c" * 64)
        assert await lock.acquire(pool, never_done)
        busy = threading.Event()
        pool.submit(busy.wait, 5)  # the unlock has to wait in the queue
        task = asyncio.create_task(lock.release(pool))
        await asyncio.sleep(0.01)
        task.cancel()  # the caller goes away while the unlock is queued
        with pytest.raises(asyncio.CancelledError):
            await task
        busy.set()
        other = FileLock(tmp_path, "c" * 64)
        assert await other.acquire(other_pool, never_done, timeout=2)
        await other.release(other_pool)


async def test_a_release_after_the_executor_shut_down_unlocks(tmp_path: Path) -> None:
    from proxy.cache import FileLock

    pool = ThreadPoolExecutor(1)
    lock = FileLock(tmp_path, "s" * 64)
    assert await lock.acquire(pool, never_done)
    pool.shutdown(wait=True)
    await lock.release(pool)
    with ThreadPoolExecutor(1) as fresh:
        other = FileLock(tmp_path, "s" * 64)
        assert await other.acquire(fresh, never_done, timeout=1)
        await other.release(fresh)
