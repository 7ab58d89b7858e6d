"""One evictor per cache folder: whichever process holds ``.locks/evictor`` keeps the folder under
``cache.max_size``; the others (the other workers of ``serve --workers N``) only read its numbers.

The lock is an ``flock``: the kernel releases it when its holder dies (kill -9 included), and the next
worker to try takes over. Each sweep lists the folder, and when it is over the bound deletes the least
recently used renders (access time: ``DiskCache.has`` sets it on every look at the disk, nginx's
reads may too) down to 90% of it. A render used within ``grace`` seconds is never deleted, the
bound giving way: a worker answers a 302 from memory only within ``recheck`` seconds of setting the
file's access time, the 302 micro-cache within another ``recheck``, so every 302 points at a file
that stays at least ``grace - 2 * recheck`` seconds more. (Were it gone all the same, the asset URL
would make it again: ``links.py``.)

The folder's usage (files, bytes, renders evicted) is written to ``.locks/usage.json`` after each
sweep, so every worker's ``/metrics`` tells the same, whole-folder numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path

from .cache import TMP_PREFIX
from .origin import clear_spool

MIN_EVERY = 2.0       # seconds between sweeps at most, unless a write asks for one sooner ...
SWEEP_SHARE = 0.02    # ... but sweeping takes at most ~2% of one thread however often it is asked
log = logging.getLogger("proxy.cache")


@dataclass(frozen=True, slots=True)
class Usage:
    files: int = 0
    bytes: int = 0
    evicted: int = 0  # renders deleted by the evictors of this folder since it was created


class Evictor:
    def __init__(self, root: Path, max_size: int, io: Executor, recheck: float, margin: float = 10.0
                 ) -> None:
        self.root = root
        self.max_size = max_size
        self.io = io
        self.grace = 2 * recheck + margin  # margin: [cache] evict_grace
        self._fd: int | None = None
        self._usage_file = root / ".locks" / "usage.json"
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """A render was written: sweep soon (when this process leads) rather than at the next turn."""
        self._wake.set()

    @property
    def leading(self) -> bool:
        return self._fd is not None

    def _lead(self) -> bool:
        """Hold the folder's evictor lock (kept until the process ends); True when this process does."""
        if self._fd is not None:
            return True
        path = self.root / ".locks" / "evictor"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def sweep(self, now: float | None = None) -> Usage:
        """List the folder; over ``max_size``, delete least recently used renders to 90% of it
        (never one used within ``grace`` seconds). Blocking: run it in the file-system executor."""
        now = time.time() if now is None else now
        found: list[tuple[float, int, str]] = []
        for dirpath, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # .locks, .spool
            for name in names:
                if name.startswith(TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    st = os.stat(full)
                    found.append((st.st_atime, st.st_size, full))
        total = sum(size for _a, size, _p in found)
        evicted = 0
        if total > self.max_size:
            target = int(self.max_size * 0.9)  # in batches, not one file per write at the bound
            found.sort()
            for atime, size, full in found:
                if total <= target or atime > now - self.grace:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(full)
                    evicted += 1
                total -= size
        clear_spool(self.root / ".spool")  # what a crashed worker spooled: it is restarted, not its files
        usage = Usage(len(found) - evicted, total, self.usage().evicted + evicted)
        self._write_usage(usage)
        return usage

    def _write_usage(self, usage: Usage) -> None:
        self._usage_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._usage_file.with_name(f"{TMP_PREFIX}usage.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(usage)))
        os.replace(tmp, self._usage_file)

    def usage(self) -> Usage:
        """The folder's usage as of the last sweep (by whichever process leads). Blocking, but one small
        read: the ``/metrics`` handler calls it."""
        try:
            raw = json.loads(self._usage_file.read_text())
            return Usage(int(raw["files"]), int(raw["bytes"]), int(raw["evicted"]))
        except (OSError, ValueError, KeyError, TypeError):
            return Usage()

    async def run(self) -> None:
        """Sweep whenever this process leads; try to lead at each turn (the leader may have died)."""
        loop = asyncio.get_running_loop()
        while True:
            cost = 0.0
            try:
                if await loop.run_in_executor(self.io, self._lead):
                    started = time.monotonic()
                    await loop.run_in_executor(self.io, self.sweep)
                    cost = time.monotonic() - started
            except OSError as exc:  # a full or vanished disk must not end the loop
                log.warning('{"event": "cache_sweep_failed", "error": "%s"}', exc)
            await asyncio.sleep(cost / SWEEP_SHARE)  # a folder of 10^5 renders is not listed back to back
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), MIN_EVERY)
            self._wake.clear()
