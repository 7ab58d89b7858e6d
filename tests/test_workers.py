"""Several processes on one cache folder: a render is made once; ``serve --workers N`` runs and stops."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import config_raw, free_port, renders, write_config, write_media
from processes import Service, get, wait_http


def _config(tmp_path: Path, **sections: object) -> Path:
    return write_config(tmp_path / "config.toml", config_raw(tmp_path, write_media(tmp_path / "media"),
                                                             **sections))


def _renders(port: int) -> float:
    text = get(port, "/metrics")[2].decode()
    return sum(float(v) for v in re.findall(r'preview_render_seconds_count\{kind="image"\} ([\d.]+)', text))


def test_two_processes_on_one_cache_render_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    a, b = Service(config), Service(config)
    a.start()
    b.start()
    try:
        path = "/api/v1/file/lib/-/astronaut.png?preview&size=150"
        ports = [a.port, b.port] * 12
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda p: get(p, path), ports))
        assert {status for status, _, _ in answers} == {302}
        assert len({headers["location"] for _, headers, _ in answers}) == 1
        assert _renders(a.port) + _renders(b.port) == 1
        assert len(renders(tmp_path / "cache", ".png")) == 1
    finally:
        a.stop()
        b.stop()


def test_serve_workers_shares_a_port_and_stops_cleanly(tmp_path: Path) -> None:
    config = _config(tmp_path)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(port)
        statuses = [get(port, f"/api/v1/file/lib/-/landscape.jpg?preview&size={n}")[0] for n in range(10, 20)]
        assert statuses == [302] * 10
        children = _children(proc.pid)
        assert len(children) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_several_workers_with_private_libraries_need_a_shared_store(tmp_path: Path) -> None:
    media = write_media(tmp_path / "media")
    config = write_config(tmp_path / "config.toml", config_raw(
        tmp_path, media, cache={"sign_secret": "s"},
        libraries=[{"id": "lib", "origin": str(media), "secret": "s", "public_read": False}]))
    result = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(config),
                             "--port", str(free_port()), "--workers", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "shared token store" in result.stderr


def test_two_workers_on_a_tiny_cache_never_answer_an_asset_404(tmp_path: Path) -> None:
    """One evictor for the folder (not one per worker's partial view): under load at a tiny max_size,
    every 302 resolves to the image, and the folder is kept near its bound."""
    from urllib.parse import urlsplit

    import numpy as np
    import pyvips

    config = _config(tmp_path, cache={"max_size": "1MiB", "version_ttl": 0.05, "evict_grace": 0.2})
    names = [f"noise{n}.png" for n in range(5)]
    rng = np.random.default_rng(5)
    for name in names:  # renders of ~100-400 KiB each: a few fill the bound
        noise = rng.integers(0, 255, (400, 400, 3), dtype=np.uint8)
        pyvips.Image.new_from_array(noise).copy(interpretation="srgb").pngsave(str(tmp_path / "media" / name))
    service = Service(config, extra=["--workers", "2"]).start()

    def preview_then_asset(n: int) -> tuple[int, int]:
        path = f"/api/v1/file/lib/-/{names[n % 5]}?preview&width_size={200 + n % 40}"
        status, headers, _ = service.get(path)
        if status != 302:
            return status, 0
        return status, service.get(urlsplit(headers["location"]).path)[0]

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(preview_then_asset, range(300)))
        assert answers == [(302, 200)] * 300, sorted(set(answers))
        evicted = 0
        for _ in range(100):  # the evictor's sweep after the last writes (whichever worker leads)
            usage = json.loads((tmp_path / "cache" / ".locks" / "usage.json").read_text())
            evicted = usage["evicted"]
            if evicted and usage["bytes"] <= 1024**2:
                break
            time.sleep(0.1)
        assert evicted > 0 and usage["bytes"] <= 1024**2, usage
    finally:
        service.stop()


def test_metrics_and_cache_stats_describe_every_worker(tmp_path: Path) -> None:
    """Successive scrapes answered by different workers tell the same, whole-service numbers."""
    from proxy.config import load_config
    from proxy.tools import cache_stats

    config = _config(tmp_path)
    service = Service(config, extra=["--workers", "2"]).start()
    paths = [f"/api/v1/file/lib/-/landscape.jpg?preview&size={20 + n}" for n in range(10)]
    try:
        with ThreadPoolExecutor(4) as pool:
            assert {s for s, _h, _b in pool.map(service.get, paths)} == {302}  # 10 misses
            assert {s for s, _h, _b in pool.map(service.get, paths)} == {302}  # 10 hits
        for _ in range(8):  # new connections: SO_REUSEPORT spreads them over the workers
            text = service.get("/metrics")[2].decode()
            hits = re.search(r'preview_cache_total\{result="hit"\} ([\d.]+)', text)
            misses = re.search(r'preview_cache_total\{result="miss"\} ([\d.]+)', text)
            assert hits and misses and (float(hits.group(1)), float(misses.group(1))) == (10, 10), text
            renders_done = re.search(r'preview_render_seconds_count\{kind="image"\} ([\d.]+)', text)
            assert renders_done and float(renders_done.group(1)) == 10
        stats = cache_stats(load_config(config), service.url)
        assert (stats.hits, stats.misses) == (10, 10)
    finally:
        service.stop()


def test_a_restart_that_cannot_start_does_not_stop_the_serving_workers(tmp_path: Path) -> None:
    """Only the first start is fatal: a worker that died after the service served, and whose restart
    fails (here: its config briefly unreadable, exit 2), is retried with a growing pause while the
    other worker keeps answering; it comes back once the config does."""
    config = _config(tmp_path)
    good = config.read_text()
    service = Service(config, extra=["--workers", "2"]).start()
    assert service.proc is not None
    try:
        for _ in range(300):  # both workers read the config and serve
            if service.log_text().count('"event": "start"') == 2:
                break
            time.sleep(0.1)
        first, second = _children(service.proc.pid)
        config.write_text("[server\n")  # not TOML: a start now exits 2
        os.kill(first, signal.SIGKILL)
        for _ in range(200):  # the restart after the kill, and one retry 2 s later, fail
            if '"code": 2, "restart_in": 4.0' in service.log_text():
                break
            time.sleep(0.1)
        assert '"code": 2, "restart_in": 4.0' in service.log_text(), service.log_text()
        assert service.proc.poll() is None
        assert service.get("/api/v1/file/lib/-/landscape.jpg?preview&size=40")[0] == 302
        assert second in _children(service.proc.pid)
        config.write_text(good)
        for _ in range(200):  # the next retry (4 s after the second failure) starts
            if len(_children(service.proc.pid)) == 2:
                break
            time.sleep(0.1)
        assert len(_children(service.proc.pid)) == 2
        assert service.get("/api/v1/file/lib/-/landscape.jpg?preview&size=41")[0] == 302
    finally:
        assert service.stop() == 0


def test_restart_pause_doubles_on_failed_starts_and_resets_after_a_start_that_worked() -> None:
    from proxy.workers import RESTART_PAUSE, RESTART_PAUSE_MAX, restart_pause

    pause, pauses = RESTART_PAUSE, []
    for _ in range(7):
        pause = restart_pause(2, pause)
        pauses.append(pause)
    assert pauses == [2, 4, 8, 16, RESTART_PAUSE_MAX, RESTART_PAUSE_MAX, RESTART_PAUSE_MAX]
    assert restart_pause(-signal.SIGKILL, RESTART_PAUSE_MAX) == RESTART_PAUSE
