"""Crash safety with a real ``preview-proxy serve`` process on a free port.

``kill -9`` in the middle of renders never leaves a file that is served later (temp names,
``os.replace``, clean-up at start); SIGTERM stops accepting, finishes in-flight renders, exits 0.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pyvips
from conftest import config_raw, renders, write_config
from processes import Service


@pytest.fixture
def slow_media(tmp_path: Path) -> Path:
    """Photos whose renders take a good fraction of a second each (PNG has no shrink-on-load)."""
    folder = tmp_path / "media"
    folder.mkdir()
    noise = pyvips.Image.gaussnoise(3000, 2000, mean=128, sigma=40).cast("uchar")
    noise = noise.bandjoin([noise, noise]).copy(interpretation="srgb")
    for i in range(4):
        noise.pngsave(str(folder / f"big{i}.png"), compression=1)
    return folder


@pytest.fixture
def service(tmp_path: Path, slow_media: Path) -> Iterator[Service]:
    config = write_config(tmp_path / "config.toml", config_raw(tmp_path, slow_media,
                                                               limits={"render_concurrency": 2}))
    svc = Service(config)
    yield svc
    svc.stop(signal.SIGKILL)


def in_background(svc: Service, paths: list[str]) -> tuple[list[threading.Thread], list[object]]:
    results: list[object] = []

    def one(path: str) -> None:
        try:
            results.append(svc.get(path))
        except OSError as exc:
            results.append(exc)

    threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in paths]
    for t in threads:
        t.start()
    return threads, results


def temp_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob(".tmp-*") if p.is_file()] if cache.is_dir() else []


def stop_mid_write(proc_pid: int, cache: Path, attempts: int = 200_000) -> Path | None:
    """Watch the cache for a render being written (its temp file) and freeze the service right then
    (SIGSTOP): the write is caught in progress, not guessed at with a sleep. The temp file, or None."""
    for _ in range(attempts):
        if temp_files(cache):
            os.kill(proc_pid, signal.SIGSTOP)
            if still := temp_files(cache):  # not renamed between the look and the stop
                return still[0]
            os.kill(proc_pid, signal.SIGCONT)
    return None


def test_kill_9_mid_write_leaves_nothing_served_partial(service: Service, tmp_path: Path) -> None:
    service.start()
    assert service.proc is not None
    cache = tmp_path / "cache"
    # full-size renders of 6 MP noise: big PNG writes, each a window to be caught in
    partial, paths = None, []
    for batch in range(3):  # a batch's writes may all slip between two looks: then another batch
        more = [f"/api/v1/file/lib/-/big{i % 4}.png?preview&scale={60 + 10 * batch + i}" for i in range(10)]
        paths += more
        in_background(service, more)
        if (partial := stop_mid_write(service.proc.pid, cache)) is not None:
            break
    service.proc.send_signal(signal.SIGKILL)
    service.proc.wait(10)
    assert partial is not None, "no render write was caught in progress"
    assert partial.exists()  # the dead writer's temp file, as the kill left it
    service.start()
    assert not partial.exists(), "a temp file of a dead writer survived the restart"
    assert temp_files(cache) == []
    # every render on disk is whole, and every answer after the restart serves a whole image
    for path in renders(cache):
        image = pyvips.Image.new_from_file(str(path), fail_on="warning")
        assert image.avg() > 0
    for p in paths[:4]:
        status, headers, _ = service.get(p)
        assert status == 302
        location = urlsplit(headers["location"])
        status, _, body = service.get(location.path)
        assert status == 200
        pyvips.Image.new_from_buffer(body, "", fail_on="warning").avg()


def renders_running(service: Service) -> float:
    text = service.get("/metrics")[2].decode()
    return sum(float(v) for v in re.findall(r"^preview_renders_running(?:\{[^}]*\})? ([\d.]+)", text, re.M))


def test_sigterm_finishes_in_flight_and_exits_0(service: Service) -> None:
    service.start()
    paths = [f"/api/v1/file/lib/-/big{i}.png?preview&size=300" for i in range(3)]
    threads, results = in_background(service, paths)
    while renders_running(service) < 2:  # both render threads busy: renders are in flight
        time.sleep(0.01)
    assert service.proc is not None
    service.proc.send_signal(signal.SIGTERM)
    refused = False
    for _ in range(500):  # until it stops accepting (it must, long before the renders end)
        try:
            service.get("/healthz", timeout=2)
        except OSError:
            refused = True
            break
        time.sleep(0.01)
    assert refused, "still accepting after SIGTERM"
    assert service.proc.wait(30) == 0
    for t in threads:
        t.join(10)
    assert [r[0] if isinstance(r, tuple) else r for r in results] == [302] * 3


def test_sigterm_when_idle_exits_0_at_once(service: Service) -> None:
    service.start()
    assert service.proc is not None
    started = time.monotonic()
    os.kill(service.proc.pid, signal.SIGTERM)
    assert service.proc.wait(15) == 0
    assert time.monotonic() - started < 5


_SPOOL_THEN_DIE = """
import asyncio, os, signal, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from proxy.origin import spool

async def chunks():
    yield b"the first part of a big original"
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-fetch, as by the OOM killer

asyncio.run(spool(chunks(), 10**6, ThreadPoolExecutor(1), Path(sys.argv[1])))
"""


def _crash_while_spooling(folder: Path) -> Path:
    import subprocess
    import sys

    before = set(folder.iterdir())
    subprocess.run([sys.executable, "-c", _SPOOL_THEN_DIE, str(folder)], timeout=60)
    (left,) = set(folder.iterdir()) - before
    return left


def test_a_crashed_processes_spooled_sources_go_at_start_and_in_the_evictors_sweep(tmp_path: Path) -> None:
    """A worker killed mid-fetch is restarted a second later: its spooled source must not wait an
    hour. Files of a live process (this one) stay."""
    from concurrent.futures import ThreadPoolExecutor

    from proxy.evict import Evictor
    from proxy.origin import fresh_spool

    folder = fresh_spool(tmp_path / "cache")
    live = folder / f".src.{os.getpid()}.inflight"
    live.write_bytes(b"a render in flight")
    assert _crash_while_spooling(folder).name.startswith(".src.")
    fresh_spool(tmp_path / "cache")
    assert list(folder.iterdir()) == [live]
    _crash_while_spooling(folder)
    Evictor(tmp_path / "cache", 10**9, ThreadPoolExecutor(1), recheck=5).sweep()
    assert list(folder.iterdir()) == [live]
