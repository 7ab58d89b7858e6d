"""Crash safety with a real ``preview-proxy serve`` process on a free port.

``kill -9`` in the middle of renders never leaves a file that is served later (temp names,
``os.replace``, clean-up at start); SIGTERM stops accepting, finishes in-flight renders, exits 0.
"""

from __future__ import annotations

import os
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


def test_kill_9_mid_render_leaves_nothing_served_partial(service: Service, tmp_path: Path) -> None:
    service.start()
    paths = [f"/api/v1/file/lib/-/big{i % 4}.png?preview&size={200 + i}" for i in range(12)]
    in_background(service, paths)
    time.sleep(0.6)  # renders in flight, some written, some not
    assert service.proc is not None
    service.proc.send_signal(signal.SIGKILL)
    service.proc.wait(10)
    cache = tmp_path / "cache"
    # a crash in the middle of a write leaves a temp file like this one behind
    some = next(iter(renders(cache)), None)
    shard = some.parent if some else cache / "lib" / "aa" / "bb"
    shard.mkdir(parents=True, exist_ok=True)
    partial = shard / f".tmp-{'a' * 40}.png.{999999}.deadbeef"
    partial.write_bytes(b"\x89PNG\r\n\x1a\n half a file")
    service.start()
    assert not partial.exists(), "a temp file of a dead writer survived the restart"
    assert not [p for p in cache.rglob(".tmp-*")]
    # every render on disk is whole, and every answer after the restart serves a whole image
    for path in renders(cache):
        image = pyvips.Image.new_from_file(str(path), fail_on="warning")
        assert image.avg() > 0
    for p in paths:
        status, headers, _ = service.get(p)
        assert status == 302
        location = urlsplit(headers["location"])
        status, _, body = service.get(location.path)
        assert status == 200
        pyvips.Image.new_from_buffer(body, "", fail_on="warning").avg()


def test_sigterm_finishes_in_flight_and_exits_0(service: Service) -> None:
    service.start()
    paths = [f"/api/v1/file/lib/-/big{i}.png?preview&size=300" for i in range(3)]
    threads, results = in_background(service, paths)
    time.sleep(0.3)  # in flight: decoding a 6 MP PNG each
    assert service.proc is not None
    service.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(OSError):  # no longer accepting
        service.get("/healthz", timeout=2)
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
