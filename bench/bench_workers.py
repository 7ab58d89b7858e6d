"""Production shape: cold renders with 1 and 2 worker processes, and cached 302s through nginx.

    .venv/bin/python bench/bench_workers.py [--copies 4] [--clients 4] [--write]

- Cold throughput: ``preview-proxy serve --workers N`` over a folder of the corpus photos (each
  copied ``--copies`` times under new names, so every request is a real render), ``--clients``
  concurrent clients, centre crops (the face detector off, so the ratio shows the processes, not
  the detector). Fresh cache per run; N = 1 and 2 alternated, twice each; medians.
- Cached 302s: one preview URL with wrk, straight to the service and through nginx made by
  ``preview-proxy nginx-conf`` in front of it, alternated; medians.
``--write`` replaces the "workers" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_core import VENV_BIN, photos, write_section, wrk
from peers_procs import free_port, wait_http


def serve(tmp: Path, media: Path, workers: int, tag: str, threads: int = 0
          ) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    cfg = tmp / f"{tag}.toml"
    cfg.write_text(f'[cache]\ndir = "{tmp / ("cache-" + tag)}"\n[faces]\ndetector = "none"\n'
                   f'[limits]\nrender_concurrency = {threads}\n'
                   f'[[libraries]]\nid = "lib"\norigin = "{media}"\nsecret = "x"\n')
    command = [str(VENV_BIN / "preview-proxy"), "serve", "--config", str(cfg), "--port", str(port),
               "--workers", str(workers)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port, "/healthz")
    return proc, port, cfg


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def cold_throughput(port: int, names: list[str], clients: int) -> float:
    def one(name: str) -> int:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        c.request("GET", "/api/v1/file/lib/-/" + urllib.parse.quote(name) + "?preview&size=200")
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        statuses = list(pool.map(one, names))
    elapsed = time.perf_counter() - started
    assert set(statuses) == {302}, set(statuses)
    return len(names) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    media = tmp / "media"
    originals = photos(media)
    names = []
    for i in range(args.copies):
        for name in originals:
            copy = f"c{i}-{name}"
            shutil.copyfile(media / name, media / copy)
            names.append(copy)
    setups = [(1, 1), (2, 1), (1, 0), (2, 0)]  # (processes, render threads each; 0 = one per core)
    rates: dict[tuple[int, int], list[float]] = {setup: [] for setup in setups}
    try:
        for run in range(2):
            for workers, threads in setups:
                proc, port, _ = serve(tmp, media, workers, f"w{workers}t{threads}-{run}", threads)
                try:
                    rates[(workers, threads)].append(cold_throughput(port, names, args.clients))
                finally:
                    stop(proc)
        proc, port, cfg = serve(tmp, media, 1, "hot")
        nginx_dir = tmp / "nginx"
        (nginx_dir / "logs").mkdir(parents=True)
        nport = free_port()
        command = [str(VENV_BIN / "preview-proxy"), "nginx-conf", "--config", str(cfg), "--listen",
                   f"127.0.0.1:{nport}", "--upstream", f"127.0.0.1:{port}", "--user", "root"]
        conf = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        (nginx_dir / "nginx.conf").write_text(conf)
        nginx = subprocess.Popen(["nginx", "-p", str(nginx_dir), "-c", str(nginx_dir / "nginx.conf"),
                                  "-g", f"daemon off; pid {nginx_dir / 'nginx.pid'};"])
        try:
            wait_http(nport, "/healthz")
            path = "/api/v1/file/lib/-/" + urllib.parse.quote(names[0]) + "?preview&size=200"
            wait_http(port, path)
            direct, via = [], []
            for _ in range(3):
                direct.append(wrk(f"http://127.0.0.1:{port}{path}", args.seconds))
                via.append(wrk(f"http://127.0.0.1:{nport}{path}", args.seconds))
        finally:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=30)
            stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(rates[(1, 1)])
    d_rps, v_rps = statistics.median(r for r, _ in direct), statistics.median(r for r, _ in via)
    d_p99, v_p99 = statistics.median(p for _, p in direct), statistics.median(p for _, p in via)
    lines = [f"{len(names)} cold centre-crop renders (corpus photos x {args.copies}), {args.clients} "
             "clients; command: `.venv/bin/python bench/bench_workers.py`.", "",
             "| cold renders | render threads per process | renders/s (median of 2) | ratio |",
             "|---|---|---|---|",
             *(f"| serve --workers {w} | {t or 'one per core'} | {statistics.median(rates[(w, t)]):.1f} | "
               f"{statistics.median(rates[(w, t)]) / base:.2f} |" for w, t in setups), "",
             "| cached 302s (wrk -t2 -c16) | req/s (median of 3) | p99 ms | ratio |", "|---|---|---|---|",
             f"| straight to the service | {d_rps:.0f} | {d_p99:.2f} | 1.00 |",
             f"| through nginx | {v_rps:.0f} | {v_p99:.2f} | {v_rps / d_rps:.2f} |"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("workers", text)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
