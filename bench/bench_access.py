"""Benchmark: the cached 302 with a token (store lookup + sliding renewal on every request) against the
public-read cached 302, with the memory store and with Redis.

Standalone: ``.venv/bin/python bench/bench_access.py [--runs 5] [--seconds 3] [--connections 16]``.
Starts a real ``preview-proxy serve`` process on 127.0.0.1 (and a throwaway ``redis-server``), warms
the render cache, then alternates bounded ``wrk`` runs of the two URLs; prints the median requests/s
of each and their ratio (target: public / token <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peers_procs import free_port

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.3


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextmanager
def process(args: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def config(tmp: Path, port: int, store: str) -> Path:
    text = f"""
[server]
host = "127.0.0.1"
port = {port}
[cache]
dir = "{tmp}/cache-{port}"
sign_secret = "bench-sign-secret"
[store]
url = "{store}"
[faces]
detector = "none"
[[libraries]]
id = "pub"
origin = "{tmp}/media"
secret = "pub-secret"
[[libraries]]
id = "priv"
origin = "{tmp}/media"
secret = "priv-secret"
public_read = false
"""
    path = tmp / f"config-{port}.toml"
    path.write_text(text)
    return path


def get(url: str) -> tuple[int, bytes]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: int, connections: int, script: Path | None = None,
        pid: int = 0) -> tuple[float, float]:
    """Requests per second, and the server's CPU microseconds per request (less sensitive than
    throughput to other load on the machine: the figure the ratio target is checked on)."""
    extra = ["-s", str(script)] if script else []
    cpu = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", *extra, url],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx or 3xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    cpu = cpu_seconds(pid) - cpu if pid else 0.0
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), cpu / max(requests, 1) * 1e6


def measure(store: str, tmp: Path, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    cmd = [sys.executable, "-m", "proxy", "serve", "--config", str(config(tmp, port, store)),
           "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with process(cmd, port, tmp / f"serve-{port}.log") as server:
        tokens = [json.loads(get(f"{base}/api/v1/token?library_id=priv&library_secret=priv-secret")[1])
                  ["accessToken"] for _ in range(args.connections)]
        path = "/api/v1/file/{lib}/-/photo.jpg?preview&size=200"
        public = base + path.format(lib="pub")
        private = base + path.format(lib="priv") + f"&access_token={tokens[0]}"
        # one token per connection: concurrent lookups of different tokens (no shared round trip)
        script = tmp / f"tokens-{port}.lua"
        paths = ", ".join(f'"{path.format(lib="priv")}&access_token={t}"' for t in tokens)
        script.write_text(f"local p = {{{paths}}}\nlocal i = 0\n"
                          "request = function() i = i % #p + 1; return wrk.format('GET', p[i]) end\n")
        for url in (public, private):  # render once: what follows is the cached 302
            status, _ = get(url)
            assert status == 302, status
        runs: dict[str, list[tuple[float, float]]] = {"public": [], "token": [], "tokens": []}
        for seconds in [1] + [args.seconds] * args.runs:  # a 1 s warm-up round, then the measured ones
            # alternated, so drift (other load on the box) hits all alike
            got = (wrk(public, seconds, args.connections, pid=server.pid),
                   wrk(private, seconds, args.connections, pid=server.pid),
                   wrk(private, seconds, args.connections, script, pid=server.pid))
            if seconds == args.seconds:
                for name, value in zip(runs, got, strict=True):
                    runs[name].append(value)
    result = {}
    for name, values in runs.items():
        result[name] = statistics.median(v[0] for v in values)
        result[name + "_cpu"] = statistics.median(v[1] for v in values)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install -y {tool})", file=sys.stderr)
            return 2
    import pyvips

    with tempfile.TemporaryDirectory(prefix="bench-access-") as name:
        tmp = Path(name)
        (tmp / "media").mkdir()
        pyvips.Image.black(1600, 1200, bands=3).add([40, 90, 160]).cast("uchar").jpegsave(
            str(tmp / "media" / "photo.jpg"))
        rport = free_port()
        redis_cmd = ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no"]
        rows = []
        with process(redis_cmd, rport, tmp / "redis.log"):
            for store in ("memory://", f"redis://127.0.0.1:{rport}/0"):
                r = measure(store, tmp, args)
                rows.append((store.split(":")[0], r))
    print(f"cached 302, {args.runs} alternated wrk runs of {args.seconds}s, 1 thread, "
          f"{args.connections} connections; medians")
    print("public: public-read library; token: every connection the same token; tokens: one token per "
          "connection.\nreq/s: wrk throughput; us/req: server CPU per request; x: token cost / public cost")
    print(f"{'store':7} {'':>9} {'public':>8} {'token':>8} {'x':>5} {'tokens':>8} {'x':>5}")
    ok = True
    for store, r in rows:
        for unit, suffix, scale in (("req/s", "", -1), ("us/req", "_cpu", 1)):
            p, t, n = (r[k + suffix] for k in ("public", "token", "tokens"))
            x1, xn = (t / p, n / p) if scale > 0 else (p / t, p / n)
            print(f"{store:7} {unit:>9} {p:8.0f} {t:8.0f} {x1:5.2f} {n:8.0f} {xn:5.2f}")
            if scale > 0:
                ok = ok and max(x1, xn) <= TARGET
    print(f"target: ratio <= {TARGET}: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
