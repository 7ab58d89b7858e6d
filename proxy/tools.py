"""Operator commands: ``warm``, ``cache stats``, ``cache purge``, ``check``.

They run the service's own code (``create_app`` and its state, without a listening socket), so a
warmed render is exactly the one a request would have made.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .access import Grant, origin_space
from .app import create_app
from .config import Config, LibraryConfig
from .errors import ApiError
from .keys import ORIGINS, PREVIEWS
from .links import PRIVATE
from .request import FileRef, PreviewOptions, decode_file_path
from .types import Fit, Sizing

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"expected a duration such as 7d, 12h or 30m, got {text!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WarmSummary:
    rendered: int = 0
    skipped: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # files (not renders) by reason
    seconds: float = 0.0


async def warm(config: Config, lib: LibraryConfig, space: str, sizes: list[int], paths: list[str],
               progress: bool = True) -> WarmSummary:
    """Render ``size=S`` of every file (or ``paths``) for every S into the cache. A file that fails is
    counted once, with its first reason: its other sizes are not tried (they would fail alike, with
    whatever wording libvips found for that decode)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    app = create_app(config)
    runner = web.AppRunner(app)
    await runner.setup()  # the cleanup contexts: pool, cache, origins, store
    summary = WarmSummary()
    started = time.perf_counter()
    try:
        previews = app[PREVIEWS]
        folder = origin_space(lib, space)
        # the space's own folder of a multi-tenant library: its paths are relative to it
        files = paths or await app[ORIGINS][lib.id].list(folder, 10**9) or []

        async def one(path: str) -> None:
            for size in sizes:
                try:
                    ref = FileRef(lib.id, space, decode_file_path(path))
                    options = PreviewOptions(Sizing(Fit.SQUARE, size))
                    decision = await previews.preview(lib, folder, ref, options,
                                                      Grant(public=lib.space_public(space)))
                except ApiError as exc:
                    summary.failed[f"{exc.code}: {exc.message}"] += 1
                    return
                if decision.cache_hit:
                    summary.skipped += 1
                else:
                    summary.rendered += 1

        columns = (BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), "{task.fields[rate]}/s",
                   TimeRemainingColumn())
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("warm", total=len(files), rate="0.0")  # files a second
            pending = iter(files)  # shared by the consumers: each path is taken once
            done = 0

            async def consumer() -> None:
                nonlocal done
                for path in pending:
                    await one(path)
                    done += 1
                    elapsed = time.perf_counter() - started
                    bar.update(task, completed=done, rate=f"{done / elapsed:.1f}" if elapsed else "0.0")

            # a fixed pool of consumers, not a task per file: millions of files cost no more memory
            await asyncio.gather(*(consumer() for _ in range(config.limits.workers)))
    finally:
        await runner.cleanup()
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class CacheStats:
    files: int
    bytes: int
    by_library: dict[str, tuple[int, int]]
    hits: float | None = None
    misses: float | None = None


def cache_stats(config: Config, url: str = "") -> CacheStats:
    """Files and bytes in the cache folder (per library), and the hit ratio from a running service."""
    files = total = 0
    per: dict[str, list[int]] = {}
    root = Path(config.cache.dir)
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            rel = Path(dirpath, name).relative_to(root).parts
            library = rel[1] if rel[0] == PRIVATE.rstrip("/") and len(rel) > 1 else rel[0]
            size = Path(dirpath, name).stat().st_size
            files += 1
            total += size
            entry = per.setdefault(library, [0, 0])
            entry[0] += 1
            entry[1] += size
    stats = CacheStats(files, total, {k: (v[0], v[1]) for k, v in sorted(per.items())})
    if url:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=3) as resp:
                text = resp.read().decode()
            for result, value in re.findall(r'preview_cache_total\{result="(hit|miss)"\} ([\d.e+]+)', text):
                if result == "hit":
                    stats.hits = float(value)
                else:
                    stats.misses = float(value)
        except OSError:
            pass
    return stats


def cache_purge(config: Config, library: str = "", older_than: float = 0.0) -> tuple[int, int]:
    """Delete renders (of one library, or older than ``older_than`` seconds); (files, bytes) freed."""
    root = Path(config.cache.dir)
    if not root.is_dir():
        return 0, 0
    tops = [root / library, root / PRIVATE / library] if library else [root]
    now = time.time()
    files = freed = 0
    for top in tops:
        if not top.is_dir():
            continue
        if library and not older_than:
            for path in top.rglob("*"):
                if path.is_file():
                    files += 1
                    freed += path.stat().st_size
            shutil.rmtree(top, ignore_errors=True)
            continue
        for dirpath, dirs, names in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                path = Path(dirpath, name)
                st = path.stat()
                if not name.startswith(".") and now - st.st_mtime >= older_than:
                    path.unlink(missing_ok=True)
                    files += 1
                    freed += st.st_size
    return files, freed


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
