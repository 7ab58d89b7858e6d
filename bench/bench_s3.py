"""S3 origin benchmark: cold previews of the same photos from a local folder, a plain HTTP origin and a
SeaweedFS bucket, in one run, through one service; then the per-request cost of the S3 client itself.

    .venv/bin/python bench/bench_s3.py [--rounds 3] [--write]

One ``preview-proxy serve`` (faces off: detection would add the same CPU to every column and hide the
origin's share) holds three libraries over copies of the acceptance photo set: ``local`` (a folder),
``http`` (``python -m http.server`` on that folder) and ``s3`` (a SeaweedFS bucket, signed requests).
Each round asks every photo once per library, libraries rotated per photo, at a size no earlier
round used (so every request renders: HEAD or revalidation, GET, decode, resize, encode, write). The
service's CPU time (user + system, from /proc) is read around each request and summed per library.
Then, in this process: the time botocore's SigV4 signer takes per request, and a HEAD of one object
through ``S3Client`` against an unsigned aiohttp HEAD of the same file on the HTTP origin (best of 3
runs of 300). ``--write`` replaces the "s3" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import aiohttp
from bench_core import ROOT, VENV_BIN, cpu_seconds, photos, write_section, wrk
from peers_procs import free_port, wait_http

sys.path.insert(0, str(ROOT / "tests"))
from seaweed import SeaweedFS  # the tests' own SeaweedFS launcher

LIBRARIES = ("local", "http", "s3")


async def upload(store: SeaweedFS, media: Path, names: list[str]) -> None:
    await store.create_bucket("bench")
    client = store.client("bench")
    for name in names:
        await client.put(name, (media / name).read_bytes())
    await client.close()


def serve(tmp: Path, media: Path, http_port: int, store: SeaweedFS) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    s3 = store.s3_table()
    table = "\n".join(f'{k} = "{v}"' for k, v in s3.items())
    cfg = tmp / "bench.toml"
    cfg.write_text(f'[cache]\ndir = "{tmp / "cache"}"\n[faces]\ndetector = "none"\n'
                   f'[[libraries]]\nid = "local"\norigin = "{media}"\nsecret = "x"\n'
                   f'[[libraries]]\nid = "http"\norigin = "http://127.0.0.1:{http_port}/"\nsecret = "x"\n'
                   f'[[libraries]]\nid = "s3"\norigin = "s3://bench"\nsecret = "x"\n'
                   f'[libraries.s3]\n{table}\n')
    log = open(tmp / "service.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([str(VENV_BIN / "preview-proxy"), "serve", "--config", str(cfg),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    wait_http(port, "/healthz")
    return proc, port


Timings = dict[str, list[tuple[float, float]]]


def cold_rounds(pid: int, port: int, names: list[str], rounds: int) -> Timings:
    """Per library: (wall seconds, service CPU seconds) of each cold preview."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out: Timings = {lib: [] for lib in LIBRARIES}
    for r in range(rounds):
        for i, name in enumerate(names):
            for k in range(len(LIBRARIES)):
                lib = LIBRARIES[(i + r + k) % len(LIBRARIES)]
                cpu, wall = cpu_seconds(pid), time.perf_counter()
                c.request("GET", f"/api/v1/file/{lib}/-/{urllib.parse.quote(name)}?preview&size={200 + r}")
                resp = c.getresponse()
                resp.read()
                assert resp.status == 302, (lib, name, resp.status)
                out[lib].append((time.perf_counter() - wall, cpu_seconds(pid) - cpu))
    return out


async def per_request(store: SeaweedFS, name: str, http_port: int, runs: int = 300) -> dict[str, float]:
    """Microseconds per call: signing alone, a signed S3 HEAD, an unsigned HEAD of the same bytes."""
    client = store.client("bench")
    url = client.url(name)

    async def sign() -> None:
        await client._signed_headers("HEAD", url, b"", {})

    async def s3_head() -> None:
        await client.head(name)

    async def http_head() -> None:
        async with session.head(f"http://127.0.0.1:{http_port}/{urllib.parse.quote(name)}") as resp:
            assert resp.status == 200

    async with aiohttp.ClientSession() as session:
        result = {}
        for label, fn in (("sign", sign), ("s3_head", s3_head), ("http_head", http_head)):
            best = float("inf")
            for _ in range(3):
                started = time.perf_counter()
                for _ in range(runs):
                    await fn()
                best = min(best, (time.perf_counter() - started) / runs)
            result[label] = best * 1e6
    await client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--aiobotocore", default="", metavar="PYTHON",
                        help="a Python with aiobotocore installed: compare clients (bench/s3_clients.py)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        media = tmp / "media"
        names = photos(media)
        store = SeaweedFS(tmp / "seaweedfs").start()
        http_port = free_port()
        http_origin = subprocess.Popen([sys.executable, "-m", "http.server", str(http_port), "--bind",
                                        "127.0.0.1", "--directory", str(media)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = None
        try:
            wait_http(http_port, "/")
            asyncio.run(upload(store, media, names))
            proc, port = serve(tmp, media, http_port, store)
            cold = cold_rounds(proc.pid, port, names, args.rounds)
            hot = {lib: wrk(f"http://127.0.0.1:{port}/api/v1/file/{lib}/-/{urllib.parse.quote(names[0])}"
                            "?preview&size=200", 4) for lib in LIBRARIES}
            micro = asyncio.run(per_request(store, names[0], http_port))
            clients = compare_clients(args.aiobotocore, store, names[0]) if args.aiobotocore else {}
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            http_origin.terminate()
            store.stop()
    flags = f"--rounds {args.rounds} --write" + (" --aiobotocore PYTHON" if clients else "")
    text = report(cold, micro, len(names), flags) + hot_report(hot) + clients_report(clients)
    print(text)
    if args.write:
        write_section("s3", text)


def compare_clients(python: str, store: SeaweedFS, key: str) -> dict[str, int]:
    from seaweed import ACCESS_KEY, SECRET_KEY

    out = subprocess.run([python, str(ROOT / "bench" / "s3_clients.py"), store.endpoint, "bench", key,
                          ACCESS_KEY, SECRET_KEY], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def hot_report(hot: dict[str, tuple[float, float]]) -> str:
    rows = "\n".join(f"| {lib} | {rps:.0f} | {rps / hot['local'][0]:.3f} | {p99:.1f} ms |"
                     for lib, (rps, p99) in hot.items())
    return ("\n\nCached 302s (one rendered preview URL per library, `wrk -t2 -c16 -d4s`, the same service): "
            "the origin is not asked within `version_ttl`, whatever its kind.\n\n"
            "| library | 302/s | vs local | p99 |\n|---|---|---|---|\n" + rows)


def clients_report(c: dict[str, int]) -> str:
    if not c:
        return ""
    rows = "\n".join(f"| {what} | {c[f'ours_{what}_cpu_us']} us | {c[f'aiobotocore_{what}_cpu_us']} us "
                     f"| {c[f'ours_{what}_wall_us']} us | {c[f'aiobotocore_{what}_wall_us']} us |"
                     for what in ("head", "get"))
    return ("\n\nThe same calls through proxy/s3.py (botocore's signer over aiohttp) and through "
            "aiobotocore, one process, best of 3 x 200 (`--aiobotocore /path/to/python-with-aiobotocore`, "
            "bench/s3_clients.py); GET reads the whole first photo:\n\n"
            "| call | CPU, s3.py | CPU, aiobotocore | wall, s3.py | wall, aiobotocore |\n"
            "|---|---|---|---|---|\n" + rows)


def report(cold: Timings, micro: dict[str, float], photos_n: int, flags: str) -> str:
    cpu = {lib: sum(c for _, c in rows) / len(rows) * 1000 for lib, rows in cold.items()}
    wall = {lib: statistics.median(w for w, _ in rows) * 1000 for lib, rows in cold.items()}
    rounds = len(cold["s3"]) // photos_n
    extra = cpu["s3"] / cpu["http"] - 1
    lines = [f"**The S3 origin costs {extra:+.1%} service CPU per cold render against the plain HTTP "
             "origin** "
             "(target: at most +10%).", "",
             f"Command: `.venv/bin/python bench/bench_s3.py {flags}`. {photos_n} photos "
             f"x {rounds} rounds per origin, every request a new render (size=200+round), faces off, one "
             "service process, origins on 127.0.0.1 (SeaweedFS and the HTTP origin use their own CPU, "
             "not counted). The HTTP origin (python's http.server) closes its connection after every "
             "answer, SeaweedFS keeps it open: part of the http column is connection set-up, so the S3 "
             "origin can come out cheaper; the machine is shared, so runs differ by several percent.", "",
             "| origin | service CPU per cold render (mean) | vs http | vs local | wall (median) |",
             "|---|---|---|---|---|"]
    for lib in LIBRARIES:
        lines.append(f"| {lib} | {cpu[lib]:.1f} ms | {cpu[lib] / cpu['http']:.3f} "
                     f"| {cpu[lib] / cpu['local']:.3f} | {wall[lib]:.1f} ms |")
    lines += ["", "Per request, in the benchmark process (best of 3 x 300, one connection reused):", "",
              "| call | time |", "|---|---|",
              f"| botocore SigV4 signing of one request (S3SigV4Auth) | {micro['sign']:.0f} us |",
              f"| S3Client.head (signed HEAD, SeaweedFS) | {micro['s3_head']:.0f} us |",
              f"| aiohttp HEAD of the same file (python -m http.server) | {micro['http_head']:.0f} us |"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
