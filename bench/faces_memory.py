"""The service's memory with the face detector: RSS at start, and its peak under concurrent cold
face-aware renders.

    .venv/bin/python bench/faces_memory.py [--photo PATH] [--concurrency 32] [--threads 2]

Starts the real service (``preview-proxy serve``, ``render_concurrency = --threads``) twice, with the
face detector (``detector = "auto"``, the shipped model) and without (``"none"``), and for each reads
its RSS once ``/healthz`` answers, then sends ``--concurrency`` cold ``size=200`` previews at once, each
of a different name (hard links of one ~8 MP photo, so every request is a real render), sampling RSS
every 20 ms. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from peers_procs import free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT.parent / "shared" / "corpus" / "photos" / "sharp_gain-map.jpg"
VENV_BIN = Path(sys.executable).parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def burst(port: int, names: list[str]) -> list[int]:
    async with aiohttp.ClientSession() as session:
        async def one(name: str) -> int:
            url = f"http://127.0.0.1:{port}/api/v1/file/lib/-/{name}?preview&size=200"
            async with session.get(url, allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=300)) as resp:
                return resp.status

        return list(await asyncio.gather(*(one(n) for n in names)))


def measure(tmp: Path, media: Path, detector: str, threads: int, names: list[str]
            ) -> tuple[float, float, int]:
    port = free_port()
    config = tmp / f"{detector}.toml"
    config.write_text(f'[cache]\ndir = "{tmp / ("cache-" + detector)}"\n'
                      f'[limits]\nrender_concurrency = {threads}\n'
                      f'[faces]\ndetector = "{detector}"\n'
                      f'[[libraries]]\nid = "lib"\norigin = "{media}"\nsecret = "x"\n')
    proc = subprocess.Popen([str(VENV_BIN / "preview-proxy"), "serve", "--config", str(config),
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(port, "/healthz")
        time.sleep(0.5)  # let start-up settle (the warm-up runs in the render threads)
        start = rss_mib(proc.pid)
        peak = [start]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_mib(proc.pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        statuses = asyncio.run(burst(port, names))
        done.set()
        sampler.join()
        return start, peak[0], sum(s == 302 for s in statuses)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-faces-mem-") as folder:
        tmp = Path(folder)
        rows = ["| detector | RSS at start MiB | peak RSS MiB | 302s |", "|---|---|---|---|"]
        for detector in ("none", "auto"):
            media = tmp / f"media-{detector}"
            media.mkdir()
            names = [f"p{i:03d}.jpg" for i in range(args.concurrency)]
            for name in names:  # distinct names: distinct cache keys, every request a real render
                (media / name).write_bytes(args.photo.read_bytes())
            start, peak, ok = measure(tmp, media, detector, args.threads, names)
            rows.append(f"| {detector} | {start:.0f} | {peak:.0f} | {ok}/{len(names)} |")
        print(f"{args.concurrency} concurrent cold size=200 previews of {args.photo.name}, "
              f"render_concurrency = {args.threads}. Command: `.venv/bin/python bench/faces_memory.py`.\n")
        print("\n".join(rows))


if __name__ == "__main__":
    main()
