"""A bounded soak: a real ``preview-proxy serve`` on loopback, locust headless against it, RSS sampled.

    python bench/soak.py --run-time 150 --measure 20 --load 0.7

1. ``--measure`` seconds at full speed (locust, no wait) give the capacity in requests/s;
2. ``--run-time`` seconds at ``--load`` x that capacity (constant throughput per user);
the service's RSS (with its children) is sampled every ``--every`` seconds throughout. Prints the
curve, the request and error counts (429 apart), and start / peak / end RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pyvips
from peers_procs import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its direct children, in MiB."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def make_photos(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        noise = pyvips.Image.gaussnoise(1600, 1200, mean=100 + i % 50, sigma=30).cast("uchar")
        noise.bandjoin([noise.flip("horizontal"), noise.flip("vertical")]).copy(
            interpretation="srgb").jpegsave(str(folder / f"p{i:04d}.jpg"), Q=85)


def start_service(work: Path, port: int) -> subprocess.Popen[bytes]:
    config = work / "config.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n[cache]\ndir = "{work / "cache"}"\n'
                      f'[[libraries]]\nid = "soak"\norigin = "{work / "media"}"\nsecret = "soak-secret"\n')
    log = open(work / "service.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([str(BIN / "preview-proxy"), "serve", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the service did not start: see " + str(work / "service.log"))


def locust(host: str, users: int, seconds: int, throughput: float, photos: int, prefix: Path
           ) -> dict[str, int]:
    env = {**os.environ, "SOAK_PHOTOS": str(photos), "SOAK_THROUGHPUT": str(throughput)}
    subprocess.run([str(BIN / "locust"), "-f", str(ROOT / "locustfile.py"), "--headless", "--host", host,
                    "-u", str(users), "-r", str(max(1, users // 2)), "--run-time", f"{seconds}s",
                    "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"],
                   env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {"requests": 0, "failures": 0, "429": 0, "rps": 0}
    with open(f"{prefix}_stats.csv") as fh:
        for row in csv.DictReader(fh):
            if row["Name"] == "Aggregated":
                out["requests"] = int(row["Request Count"])
                out["failures"] = int(row["Failure Count"])
                out["rps"] = round(float(row["Requests/s"]))
            elif row["Name"] == "429":
                out["429"] = int(row["Request Count"])
    out["requests"] -= out["429"]  # the 429 pseudo-requests are counted twice in the aggregate
    out["rps"] = round(out["requests"] / max(1, seconds))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--run-time", type=int, default=600, help="seconds of soak (default 600)")
    parser.add_argument("--measure", type=int, default=20, help="seconds of capacity measurement")
    parser.add_argument("--load", type=float, default=0.7, help="fraction of the capacity to soak at")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = Path(tmp)
        make_photos(work / "media", args.photos)
        port = free_port()
        proc = start_service(work, port)
        host = f"http://127.0.0.1:{port}"
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.monotonic() - t0, rss_mb(proc.pid)))
                stop.wait(args.every)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            capacity = locust(host, args.users, args.measure, 0, args.photos, work / "measure")
            rate = capacity["rps"] * args.load
            soak_start = time.monotonic() - t0
            soak = locust(host, args.users, args.run_time, rate / args.users, args.photos, work / "soak")
        finally:
            stop.set()
            sampler.join()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
        print(f"capacity: {capacity['rps']} req/s ({capacity['requests']} requests, "
              f"{capacity['failures']} errors, {capacity['429']} x 429 in {args.measure}s)")
        print(f"soak: target {rate:.0f} req/s for {args.run_time}s: {soak['requests']} requests "
              f"({soak['rps']} req/s), errors other than 429: {soak['failures']}, 429: {soak['429']}")
        print("RSS (MiB) over time:")
        for t, mb in samples:
            print(f"  {t:7.1f}s {'soak' if t >= soak_start else 'meas'} {mb:8.1f}")
        during = [mb for t, mb in samples if t >= soak_start] or [0.0]
        print(f"RSS soak start {during[0]:.0f} MiB, peak {max(during):.0f} MiB, end {during[-1]:.0f} MiB; "
              f"service exit code {code}")
        return 0 if soak["failures"] == 0 and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
