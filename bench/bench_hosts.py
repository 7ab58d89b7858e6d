"""Several hosts (issue 14), ratios measured in one run:

    .venv/bin/python bench/bench_hosts.py [--before REV] [--seconds 4] [--write]

- Cached 302s per second with the asset URLs that describe their render, against the code before
  them (``--before``, default: the parent of the commit that introduced them), each a single
  ``serve`` process on the same photo, wrk -t2 -c16, alternated 3 times; medians.
- A host's first request for an asset rendered on another host, through that host's nginx (made by
  ``nginx-conf``): without a shared store (its service renders it from the source) and with one
  (SeaweedFS, ``[render_store]``: its service downloads it), against a local hit (nginx sendfile).
  Corpus photos at size=200; medians in ms.
- Peak RSS of the service's process tree (sampled every 50 ms) under 32 concurrent cold previews of
  32 distinct ~80 MB JPEGs from an HTTP origin (nginx serving a folder), default limits.
``--write`` replaces the "hosts" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]

from bench_core import photos, write_section, wrk  # noqa: E402
from peers_procs import PeakRss, free_port, wait_http  # noqa: E402

PY = sys.executable
SIZE = 200


def get(port: int, path: str) -> tuple[int, dict[str, str], float]:
    started = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, (time.perf_counter() - started) * 1000


def serve(folder: Path, config: str, code: Path = ROOT) -> tuple[subprocess.Popen[bytes], int]:
    """``python -m proxy serve`` of the code in ``code`` (another checkout for "before")."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.toml").write_text(config)
    log = open(folder / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([PY, "-m", "proxy", "serve", "--config", str(folder / "config.toml"),
                             "--host", "127.0.0.1", "--port", str(port)], cwd=code, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(code)})
    wait_http(port, "/healthz")
    return proc, port


def nginx(folder: Path, config: Path, upstream: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    conf = subprocess.run([PY, "-m", "proxy", "nginx-conf", "--config", str(config), "--listen",
                           f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{upstream}", "--user", "root"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    (folder / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["nginx", "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g",
                             f"daemon off; pid {folder / 'nginx.pid'};"])
    wait_http(port, "/healthz")
    return proc, port


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def library(cache: Path, origin: str, extra: str = "") -> str:
    return (f'[cache]\ndir = "{cache}"\n[faces]\ndetector = "none"\n{extra}'
            f'[[libraries]]\nid = "lib"\norigin = "{origin}"\nsecret = "x"\n')


def before_checkout(rev: str, tmp: Path) -> Path:
    if not rev:
        rev = subprocess.run(["git", "log", "--format=%H", "-1", "--grep", "Any host serves any asset"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip() + "^"
    where = tmp / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(where), rev], cwd=ROOT, check=True,
                   capture_output=True)
    return where


def cached_302s(tmp: Path, media: Path, name: str, before: Path, seconds: int) -> dict[str, float]:
    path = f"/api/v1/file/lib/-/{urllib.parse.quote(name)}?preview&size={SIZE}"
    runs: dict[str, list[float]] = {"now": [], "before": []}
    servers = {"now": serve(tmp / "c302-now", library(tmp / "c302-now" / "cache", str(media))),
               "before": serve(tmp / "c302-before", library(tmp / "c302-before" / "cache", str(media)),
                               before)}
    try:
        for _proc, port in servers.values():
            assert get(port, path)[0] == 302
        for _ in range(3):
            for label, (_proc, port) in servers.items():
                runs[label].append(wrk(f"http://127.0.0.1:{port}{path}", seconds)[0])
    finally:
        stop(*(proc for proc, _ in servers.values()))
    return {label: statistics.median(values) for label, values in runs.items()}


def first_elsewhere(tmp: Path, media: Path, names: list[str], store: dict[str, str] | None
                    ) -> tuple[list[float], list[float]]:
    """(local hits ms, first requests on the other host ms) for each photo."""
    tag = "store" if store else "plain"
    extra = "".join(f'{k} = "{v}"\n' for k, v in (store or {}).items())
    extra = f"[render_store]\n{extra}" if store else ""
    procs: list[subprocess.Popen[bytes]] = []
    ports = []
    try:
        for h in ("a", "b"):
            folder = tmp / f"{tag}-{h}"
            service, port = serve(folder, library(folder / "cache", str(media), extra))
            web, web_port = nginx(folder / "nginx", folder / "config.toml", port)
            procs += [service, web]
            ports.append(web_port)
        local, remote = [], []
        for name in names:
            preview = f"/api/v1/file/lib/-/{urllib.parse.quote(name)}?preview&size={SIZE}"
            status, headers, _ = get(ports[0], preview)
            assert status == 302, status
            loc = urllib.parse.urlsplit(headers["location"]).path
            assert get(ports[0], loc)[0] == 200  # nginx has it on A's disk now
            local.append(min(get(ports[0], loc)[2] for _ in range(3)))
            status, _, ms = get(ports[1], loc)
            assert status == 200, status
            remote.append(ms)
        return local, remote
    finally:
        stop(*reversed(procs))


def peak_rss(tmp: Path, count: int = 32) -> tuple[int, int, float]:
    """(peak RSS bytes, source bytes, seconds) for ``count`` concurrent cold previews over HTTP."""
    import pyvips

    origin_dir = tmp / "origin"
    origin_dir.mkdir()
    noise = pyvips.Image.gaussnoise(6600, 6600, mean=128, sigma=60).cast("uchar")
    noise.bandjoin([noise.rot180(), noise.fliphor()]).copy(interpretation="srgb").jpegsave(
        str(origin_dir / "big0.jpg"), Q=92)
    for i in range(1, count):  # distinct names: distinct renders, each a full download
        os.link(origin_dir / "big0.jpg", origin_dir / f"big{i}.jpg")
    web_dir = tmp / "origin-nginx"
    (web_dir / "logs").mkdir(parents=True)
    web_port = free_port()
    (web_dir / "nginx.conf").write_text(
        f"user root;\nworker_processes 1;\nerror_log logs/error.log;\nevents {{}}\nhttp {{ access_log off;\n"
        f"  server {{ listen 127.0.0.1:{web_port}; root {origin_dir}; }} }}\n")
    web = subprocess.Popen(["nginx", "-p", str(web_dir), "-c", str(web_dir / "nginx.conf"), "-g",
                            f"daemon off; pid {web_dir / 'nginx.pid'};"])
    service, port = serve(tmp / "rss", library(tmp / "rss" / "cache", f"http://127.0.0.1:{web_port}/"))
    try:
        wait_http(web_port, "/big0.jpg")
        started = time.perf_counter()
        with PeakRss(service.pid) as rss, ThreadPoolExecutor(count) as pool:
            paths = [f"/api/v1/file/lib/-/big{i}.jpg?preview&size={SIZE}" for i in range(count)]
            statuses = [status for status, _h, _ms in pool.map(lambda p: get(port, p), paths)]
        assert set(statuses) <= {302, 429}, statuses
        return rss.peak, (origin_dir / "big0.jpg").stat().st_size, time.perf_counter() - started
    finally:
        stop(service, web)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default="", help="the code to compare cached 302s with")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-hosts-"))
    media = tmp / "media"
    names = photos(media)
    before = before_checkout(args.before, tmp)
    try:
        rates = cached_302s(tmp, media, names[0], before, args.seconds)
        local, plain = first_elsewhere(tmp, media, names, None)
        from seaweed import ACCESS_KEY, SECRET_KEY, SeaweedFS

        weed = SeaweedFS(tmp / "weed").start()
        try:
            asyncio_create_bucket(weed, "renders")
            store = {"url": "s3://renders/r", "endpoint": weed.endpoint, "region": "us-east-1",
                     "addressing": "path", "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
            local_s, stored = first_elsewhere(tmp, media, names, store)
        finally:
            weed.stop()
        peak, source_bytes, took = peak_rss(tmp)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, capture_output=True)
    hit = statistics.median(local + local_s)
    lines = [
        "Command: `.venv/bin/python bench/bench_hosts.py` (2 cores shared; one run, every ratio from it).",
        "",
        "| cached 302s (one `serve` process, wrk -t2 -c16, median of 3) | req/s | ratio |", "|---|---|---|",
        f"| before (asset URL = key path only) | {rates['before']:.0f} | 1.00 |",
        f"| now (asset URL describes its render) | {rates['now']:.0f} "
        f"| {rates['now'] / rates['before']:.2f} |",
        "",
        f"| an asset URL on a host ({len(names)} corpus photos, size={SIZE}, through that host's nginx) "
        "| median ms | x local hit |", "|---|---|---|",
        f"| local hit (nginx sendfile) | {hit:.2f} | 1.0 |",
        f"| first request on another host, no shared store (renders it) | {statistics.median(plain):.1f} "
        f"| {statistics.median(plain) / hit:.0f} |",
        f"| first request on another host, shared store (downloads it) | {statistics.median(stored):.1f} "
        f"| {statistics.median(stored) / hit:.0f} |",
        "",
        f"32 concurrent cold previews (size={SIZE}) of 32 distinct {source_bytes / 1e6:.0f} MB JPEGs "
        "(6600x6600) from an HTTP origin, default limits (render_concurrency = 2 cores, queue 256): "
        f"peak RSS of the service {peak / 2**20:.0f} MiB (bar: < 800 MiB), all answered in {took:.0f} s. "
        "Sources are "
        "spooled to the cache's disk and decoded with shrink-on-load, so memory follows the render slots.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("hosts", text)


def asyncio_create_bucket(weed: object, bucket: str) -> None:
    import asyncio

    async def create() -> None:
        client = weed.client(bucket)  # type: ignore[attr-defined]
        try:
            await client.create_bucket()
        finally:
            await client.close()

    asyncio.run(create())


if __name__ == "__main__":
    main()
