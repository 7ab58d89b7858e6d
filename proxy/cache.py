"""The disk cache of renders: keys, sharded paths, atomic writes, render-once.

A render's file name derives from its key only: ``ab/cd/<key>.<ext>`` under ``cache.dir``. Files are
written to a temporary name in the same folder and renamed into place (``os.replace``), so a reader
(this process, another worker, nginx) sees a whole file or none. Temporary files left by a crash are
removed at start. The in-memory index keeps the hot path off the disk: a hit is a dict lookup,
re-checked against the disk once per ``version_ttl`` so that deleting the folder is always safe.
The size bound is kept by one evictor per folder (``evict.py``), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TypeVar

from .errors import RateLimitExceeded
from .links import key_path  # noqa: F401 - re-exported: the path of a key

# Bump whenever the pixels for the same source and options change: every old render is then a miss.
RENDER_VERSION = 3  # 2: still GIFs use the animations' gifsave settings; 3: YuNet_n, views by short side
TMP_PREFIX = ".tmp-"
T = TypeVar("T")


def cache_key(*parts: str) -> str:
    """The key of a render: a hash over the render version and every part that changes the output."""
    text = "\x1f".join((str(RENDER_VERSION), *parts))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


MAX_INDEX = 200_000  # renders remembered as present; beyond, the least recently used are forgotten


class DiskCache:
    """Renders on disk. Presence is answered from memory for ``recheck`` seconds after the file was
    last seen; each look at the disk also sets the file's access time to now, its recency
    for the one evictor of the folder (``evict.py``). This process never deletes a render: so
    another worker's render is never evicted behind its back by a second, partial view of the disk.
    """

    def __init__(self, root: Path, max_size: int, io: Executor, recheck: float = 5.0) -> None:
        self.root = root
        self.max_size = max_size
        self.io = io
        self.recheck = recheck
        self._index: OrderedDict[str, float] = OrderedDict()  # rel -> monotonic time last seen on disk
        self._flights: dict[str, asyncio.Task[object]] = {}
        self.on_write: Callable[[], None] | None = None  # the folder's evictor (``evict.py``)

    def path(self, rel: str) -> Path:
        return self.root / rel

    # ---- start-up -------------------------------------------------------------------------------

    def _clean(self) -> None:
        """Remove the temporary files a crash left."""
        self.root.mkdir(parents=True, exist_ok=True)
        for dirpath, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # .locks, .spool
            for name in names:
                full = os.path.join(dirpath, name)
                if name.startswith(TMP_PREFIX) and _abandoned(name, full):
                    with contextlib.suppress(OSError):
                        os.unlink(full)

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.io, self._clean)

    # ---- lookups ---------------------------------------------------------------------------------

    def _seen(self, rel: str, now: float) -> None:
        self._index[rel] = now
        self._index.move_to_end(rel)
        if len(self._index) > MAX_INDEX:
            self._index.popitem(last=False)

    def forget(self, rel: str) -> None:
        """Drop ``rel`` from the index (it is known to be gone from the disk)."""
        self._index.pop(rel, None)

    def touch(self, rel: str) -> None:
        """A render just answered from elsewhere in memory (the 302 micro-cache): keep it indexed."""
        if rel in self._index:
            self._index.move_to_end(rel)

    async def has(self, rel: str) -> bool:
        """Is the render on disk? From memory within ``recheck`` seconds of the last look; a look at
        the disk marks the file as used now (its atime), so the evictor spares it for its grace
        period, which is longer than any answer given from memory since (``evict.grace``)."""
        seen = self._index.get(rel)
        now = time.monotonic()
        if seen is not None and now - seen < self.recheck:
            self._index.move_to_end(rel)
            return True
        if not await asyncio.get_running_loop().run_in_executor(self.io, _used_now, self.root / rel):
            self.forget(rel)
            return False
        self._seen(rel, now)
        return True

    # ---- writes ----------------------------------------------------------------------------------

    def _write(self, rel: str, data: bytes) -> None:
        final = self.root / rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TMP_PREFIX}{final.name}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def put(self, rel: str, data: bytes) -> None:
        """Write a render atomically (the evictor keeps the folder's size: ``evict.py``)."""
        await asyncio.get_running_loop().run_in_executor(self.io, self._write, rel, data)
        self._seen(rel, time.monotonic())
        if self.on_write is not None:
            self.on_write()

    # ---- render once -----------------------------------------------------------------------------

    async def ensure(self, rel: str, make: Callable[[], Awaitable[tuple[str, bytes | None]]]
                     ) -> tuple[bool, str]:
        """Have the render at ``rel`` on disk: ``(True, rel)`` when it already was, else ``make()`` runs
        once for this folder (single flight in this process, a lock per key across the processes
        sharing the folder, a re-check under the lock) and ``(False, where it was written)``.
        ``make`` answers ``(rel to write, bytes)``: a render may go beside ``rel`` (a fallback), or
        ``(rel, None)`` for a file already on disk."""
        if await self.has(rel):
            return True, rel
        return False, await self.once(rel, lambda: self._locked(rel, make))

    async def _locked(self, rel: str, make: Callable[[], Awaitable[tuple[str, bytes | None]]]) -> str:
        lock = FileLock(self.root, rel.rpartition("/")[2].partition(".")[0])
        if not await lock.acquire(self.io, lambda: self.has(rel)):
            if await self.has(rel):
                return rel
            # another process has held this render for too long: no 302 to a file that is not there
            raise RateLimitExceeded("this preview is being rendered elsewhere; retry",
                                    headers={"Retry-After": "2"})
        try:
            if await self.has(rel):  # another process finished it while we waited
                return rel
            written, data = await make()
            if data is not None:
                await self.put(written, data)
            return written
        finally:
            await lock.release(self.io)

    async def once(self, key: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make`` once for concurrent callers of the same key; all get its result or error.

        The work runs in its own task, shielded: a client that goes away does not cancel a render
        that others are waiting for.
        """
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._flights[key] = task
            task.add_done_callback(lambda t: self._done(key, t))
        return await asyncio.shield(task)  # type: ignore[return-value]

    def _done(self, key: str, task: asyncio.Task[object]) -> None:
        self._flights.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone, that is not an error to log

    @property
    def in_flight(self) -> int:
        return len(self._flights)


def _abandoned(name: str, full: str) -> bool:
    """A temporary file whose writer is gone (``.tmp-<name>.<pid>.<rand>``), or an old one."""
    try:
        pid = int(name.rsplit(".", 2)[-2])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return True
    except PermissionError:
        pass  # alive, someone else's
    try:
        return time.time() - os.stat(full).st_mtime > 600  # a writer never takes this long
    except OSError:
        return False


def _used_now(path: Path) -> bool:
    """Mark the file as used now; False when it is not there. The access time is the mark (the
    modification time stays, and with it nginx's ETag and Last-Modified)."""
    try:
        os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))
        return True
    except OSError:
        return False


class FileLock:
    """A cross-process lock on one render key (workers sharing a cache folder render it once).

    ``flock`` on ``.locks/<key>``: the kernel releases it when its holder dies (kill -9 included).
    Never blocks a thread: each try is a non-blocking ``flock`` in the file-system executor, a busy
    lock is polled with a growing sleep, and the waiter stops as soon as the render is on disk.
    """

    def __init__(self, root: Path, key: str) -> None:
        self.path = root / ".locks" / key[:2] / key
        self._fd: int | None = None

    def _try(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # the file we locked may have been unlinked by the previous holder: lock the new one
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                os.close(fd)
                return False
        except FileNotFoundError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def acquire(self, io: Executor, done: Callable[[], Awaitable[bool]], timeout: float = 120.0
                      ) -> bool:
        """Take the lock (True), or return False when ``done()`` says the work is finished."""
        delay, waited = 0.005, 0.0
        loop = asyncio.get_running_loop()
        while not await loop.run_in_executor(io, self._try):
            if await done() or waited > timeout:
                return False
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.1)
        return True

    def _release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)  # while held: the next holder checks the inode
            os.close(self._fd)
            self._fd = None

    async def release(self, io: Executor) -> None:
        """Unlock off the event loop; still unlock (two syscalls, here) when that cannot happen:
        a lock left held would stall this key on every worker until the process exits."""
        try:
            done = asyncio.get_running_loop().run_in_executor(io, self._release)
        except RuntimeError:  # the executor is shut down (process exit)
            self._release()
            return
        await asyncio.shield(done)  # a cancelled caller does not cancel the queued unlock
