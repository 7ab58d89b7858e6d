"""Core benchmark: cold previews against raw pyvips, cached 302s against a bare aiohttp 302, one run.

    .venv/bin/python bench/bench_core.py [--runs 3] [--seconds 5] [--write]

Starts the real service (``preview-proxy serve``) on 127.0.0.1 over a copy of the corpus photos and
faces, once per detector setting, and measures in the same run:
- cold: the first ``size=200`` preview of each photo (detect, render, cache, 302), sequentially,
  against ``pyvips.Image.thumbnail_buffer(data, 200, height=200, crop="centre")`` + JPEG Q85 of the
  same bytes in this process (best of 3);
- hot: one cached preview URL under ``wrk -t2 -c16`` against a bare aiohttp handler answering a
  fixed 302, alternated ``--runs`` times; medians.
Ratios only mean something within one run (the machine is shared and noisy). ``--write`` replaces
the "core" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pyvips
from peers_procs import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
VENV_BIN = Path(sys.executable).parent
# the photos of the acceptance perf check (corpus photos/ without the 99.6 MP one, and faces/)
PHOTO_PATTERNS = ("photos/sharp_*.jpg", "photos/mdx_*.jpg", "faces/*.jpg")

BARE = """
import sys, hashlib
from aiohttp import web
async def h(req):
    k = hashlib.sha256((req.path + req.query_string).encode()).hexdigest()
    return web.Response(status=302, headers={"Location": "/_assets/" + k[:2] + "/" + k + ".jpg"})
app = web.Application(); app.router.add_get("/api/v1/file/{lib}/{space}/{path:.*}", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def corpus_photos() -> list[Path]:
    return sorted((f for pattern in PHOTO_PATTERNS for f in CORPUS.glob(pattern)), key=lambda f: f.name)


def photos(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for f in corpus_photos():
        shutil.copyfile(f, folder / f.name)
    return sorted(p.name for p in folder.iterdir())


def serve(tmp: Path, media: Path, detector: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = tmp / f"{detector}.toml"
    cfg.write_text(f'[cache]\ndir = "{tmp / ("cache-" + detector)}"\n'
                   f'[faces]\ndetector = "{detector}"\n'
                   f'[[libraries]]\nid = "lib"\norigin = "{media}"\nsecret = "x"\n')
    log = open(tmp / f"{detector}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(VENV_BIN / "preview-proxy"), "serve", "--config", str(cfg),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    wait_http(port, "/healthz")
    return proc, port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold(port: int, names: list[str], size: int = 200) -> list[float]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out = []
    for name in names:
        t = time.perf_counter()
        c.request("GET", "/api/v1/file/lib/-/" + urllib.parse.quote(name) + f"?preview&size={size}")
        r = c.getresponse()
        r.read()
        out.append(time.perf_counter() - t)
        assert r.status == 302, (name, r.status)
    return out


def best_of(fn: Callable[[], object], runs: int = 3) -> float:
    """The shortest of ``runs`` timings of ``fn()``, in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def raw_seconds(data: bytes) -> float:
    """check_perf.py's baseline for one photo: libvips' own centre crop, JPEG Q85, best of 3."""
    return best_of(lambda: pyvips.Image.thumbnail_buffer(data, 200, height=200, crop="centre")
                   .jpegsave_buffer(Q=85))


def raw(media: Path, names: list[str]) -> list[float]:
    return [raw_seconds((media / name).read_bytes()) for name in names]


def wrk(url: str, seconds: int) -> tuple[float, float]:
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)] if m else float("nan")
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    pyvips.cache_set_max(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-core-"))
    media = tmp / "media"
    names = photos(media)
    lines = [f"Photos: {len(names)} (corpus photos/ without the 99.6 MP one, and faces/), size=200, "
             f"JPEG Q85; {os.cpu_count()} cores. Command: `.venv/bin/python bench/bench_core.py`.", "",
             "| cold renders | sum ms | median ms | ratio to raw pyvips | service CPU ms per render |",
             "|---|---|---|---|---|"]
    raw_t = raw(media, names)
    lines.append(f"| raw pyvips thumbnail_buffer (centre) | {sum(raw_t) * 1000:.0f} | "
                 f"{statistics.median(raw_t) * 1000:.1f} | 1.00 | |")
    hot_port = 0
    procs = []
    try:
        # both services up at once and the photos asked of each in turn, so that the shared machine's
        # load drifts over both alike; CPU is the services' own (every thread), read from /proc
        servers = {detector: serve(tmp, media, detector) for detector in ("none", "auto")}
        procs += [proc for proc, _ in servers.values()]
        walls: dict[str, list[float]] = {d: [] for d in servers}
        cpu = dict.fromkeys(servers, 0.0)
        for name in names:
            for detector, (proc, port) in servers.items():
                before = cpu_seconds(proc.pid)
                walls[detector] += cold(port, [name])
                cpu[detector] += (cpu_seconds(proc.pid) - before) / len(names)
        for detector, label in (("none", "service, centre crop"), ("auto", "service, face-aware (YuNet_n)")):
            t = walls[detector]
            lines.append(f"| {label} | {sum(t) * 1000:.0f} | {statistics.median(t) * 1000:.1f} | "
                         f"{sum(t) / sum(raw_t):.2f} | {cpu[detector] * 1000:.1f} |")
        proc, port = servers["auto"]  # a second size of the same photos: the detection is cached
        before = cpu_seconds(proc.pid)
        t2 = cold(port, names, 199)
        again = (cpu_seconds(proc.pid) - before) / len(names)
        lines.append(f"| service, face-aware, a second size (detection cached) | "
                     f"{sum(t2) * 1000:.0f} | {statistics.median(t2) * 1000:.1f} | "
                     f"{sum(t2) / sum(raw_t):.2f} | {again * 1000:.1f} |")
        hot_port = port
        lines += ["", f"Face-aware CPU per cold render: {cpu['auto'] / cpu['none']:.2f}x the centre crop's."]
        bare_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", BARE, str(bare_port)]))
        wait_http(bare_port, "/api/v1/file/x/-/y")
        path = "/api/v1/file/lib/-/" + urllib.parse.quote(names[0]) + "?preview&size=200"
        ours, bare = [], []
        for _ in range(args.runs):
            ours.append(wrk(f"http://127.0.0.1:{hot_port}{path}", args.seconds))
            bare.append(wrk(f"http://127.0.0.1:{bare_port}{path}", args.seconds))
        o_rps = statistics.median(r for r, _ in ours)
        b_rps = statistics.median(r for r, _ in bare)
        lines += ["", "| cached 302s (wrk -t2 -c16) | req/s (median) | p99 ms (median) | ratio |",
                  "|---|---|---|---|",
                  f"| bare aiohttp fixed 302 | {b_rps:.0f} | "
                  f"{statistics.median(p for _, p in bare):.2f} | 1.00 |",
                  f"| service, cached preview | {o_rps:.0f} | {statistics.median(p for _, p in ours):.2f} | "
                  f"{o_rps / b_rps:.2f} |"]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("core", text)


def write_section(name: str, text: str) -> None:
    """Replace the ``<!-- name -->`` ... ``<!-- /name -->`` section of bench/RESULTS.md."""
    path = ROOT / "bench" / "RESULTS.md"
    body = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = f"{start}\n_Measured {stamp}._\n\n{text}\n{end}"
    if start in body:
        body = body[:body.index(start)] + block + body[body.index(end) + len(end):]
    else:
        body = body.rstrip() + f"\n\n## {name}\n\n{block}\n"
    path.write_text(body)


if __name__ == "__main__":
    main()
