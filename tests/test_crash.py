"""Crash safety with a real ``preview-proxy serve`` process on a free port.

``kill -9`` in the middle of renders never leaves a file that is served later (temp names,
``os.replace``, clean-up at start); SIGTERM stops accepting, finishes in-flight renders, exits 0.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pyvips
from conftest import free_port

START_SECONDS = 20


def write_config(folder: Path, media: Path, port: int) -> Path:
    path = folder / "config.toml"
    path.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}
[cache]
dir = "{folder / 'cache'}"
[faces]
detector = "none"
[limits]
render_concurrency = 2
[[libraries]]
id = "lib"
origin = "{media}"
secret = "s"
""")
    return path


class Service:
    """``preview-proxy serve`` as a subprocess, its log in a file."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = Path(sys.executable).parent / "preview-proxy"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "proxy"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*cmd, "serve", "--config", str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.config.parent)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if self.get("/healthz", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the service did not start: " + self.log.read_text()[-2000:])

    def get(self, path: str, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


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
    port = free_port()
    svc = Service(write_config(tmp_path, slow_media, port), port, tmp_path / "log")
    yield svc
    svc.stop()


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


def cache_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts]


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
    some = next(iter(cache_files(cache)), None)
    shard = some.parent if some else cache / "lib" / "aa" / "bb"
    shard.mkdir(parents=True, exist_ok=True)
    partial = shard / f".tmp-{'a' * 40}.png.{999999}.deadbeef"
    partial.write_bytes(b"\x89PNG\r\n\x1a\n half a file")
    service.start()
    assert not partial.exists(), "a temp file of a dead writer survived the restart"
    assert not [p for p in cache.rglob(".tmp-*")]
    # every render on disk is whole, and every answer after the restart serves a whole image
    for path in cache_files(cache):
        image = pyvips.Image.new_from_file(str(path), fail_on="warning")
        assert image.avg() > 0
    for p in paths:
        status, headers, _ = service.get(p)
        assert status == 302
        location = urlsplit(headers["Location"])
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
