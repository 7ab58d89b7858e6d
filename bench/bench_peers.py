"""Side by side with thumbor, sharp, raw pyvips floors and nginx, in one run on this machine (issue 7).

    .venv/bin/python bench/bench_peers.py [--quick] [--write]

Starts on 127.0.0.1 free ports, and stops at the end: an nginx origin serving the photos; the service
(``preview-proxy serve``) face-aware (YuNet) and centre-crop over a folder of hard links of the photos
(a new name per request: every request is a real render); thumbor (its own venv under bench/out,
HTTP loader, smart crop with its face and feature detectors, no storage, Q85); sharp in a Node server
(bench/peers/sharp_server.js, ``position: attention`` and ``centre``); a bare aiohttp fixed-302
handler (bench_core.BARE); nginx serving one finished render as a plain static file, and the same file
through the service's generated nginx.conf. Raw pyvips floors run in their own process (floors.py).

Cold renders are driven by loadgen.py (aiohttp client, its own process, each URL once, in-flight
requests waited for); repeated URLs by wrk. Photos: corpus photos/ without the 99.6 MP one, and
faces/*.jpg, in one shuffled order shared by every peer; 200 px square JPEG Q85 everywhere.
Concurrency 1, 8, 32 (``--quick``: 1, 8, shorter, 2 rounds), peers interleaved within each round;
medians over rounds. The machine is shared and noisy: compare ratios within one run only.
``--write`` replaces the "peers" section of bench/RESULTS.md and writes bench/peers.png.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import BARE, corpus_photos, free_port, write_section
from peers_procs import PeakRss, Procs, tree_cpu, wait_http, wrk
from peers_report import Stat, chart, profile_table, report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from proxy.links import parse_render_uri

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
PY = Path(sys.executable)
CORES = os.cpu_count() or 1
THUMBOR_CONF = """
LOADER = 'thumbor.loaders.http_loader'
STORAGE = 'thumbor.storages.no_storage'
RESULT_STORAGE = None
DETECTORS = ['thumbor.detectors.face_detector', 'thumbor.detectors.feature_detector']
QUALITY = 85
RESPECT_ORIENTATION = True
ALLOW_UNSAFE_URL = True
MAX_AGE = 0
"""
NGINX_STATIC = """user root;  # the run folder is private to this user
worker_processes {workers};
events {{ worker_connections 4096; }}
http {{
    types {{ image/jpeg jpeg jpg; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    access_log off;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{ root {root}; }}
    }}
}}
"""


@dataclass
class Peer:
    name: str
    kind: str  # "cold" (loadgen, 200/302), "floor" (floors.py), "hot" (wrk)
    pid: int = 0
    base: str = ""
    status: int = 200
    paths: str = ""  # "unique": a new file name per request; "thumbor"/"sharp"/"sharp-centre": repeated
    mode: str = ""   # floors.py mode
    url: str = ""    # hot: the one URL
    runs: dict[int, list[Stat]] = field(default_factory=dict)


class Media:
    """The photos under one folder (the service's and nginx origin's root); unique names as hard links."""

    def __init__(self, root: Path, seed: int = 7) -> None:
        self.root = root
        (root / "photos").mkdir(parents=True)
        for f in corpus_photos():
            shutil.copyfile(f, root / "photos" / f.name)
        self.names = sorted(p.name for p in (root / "photos").iterdir())
        self.rng = random.Random(seed)
        self.order: list[str] = []

    def sequence(self, n: int) -> list[str]:
        """The first ``n`` photo names of the shared order (each round of it a shuffle of all)."""
        while len(self.order) < n:
            batch = list(self.names)
            self.rng.shuffle(batch)
            self.order += batch
        return self.order[:n]

    def unique(self, tag: str, names: list[str]) -> list[str]:
        """Hard links ``u/{tag}/{i}_{name}`` (paths relative to the root), one per name given; a tag
        asked again gets the same names."""
        folder = self.root / "u" / tag
        if folder.exists():  # made for another server of the same run (its own cache): same names
            return [f"u/{tag}/{i:05d}_{name}" for i, name in enumerate(names)]
        folder.mkdir(parents=True)
        out = []
        for i, name in enumerate(names):
            os.link(self.root / "photos" / name, folder / f"{i:05d}_{name}")
            out.append(f"u/{tag}/{i:05d}_{name}")
        return out


def ensure_thumbor() -> Path:
    venv = OUT / "thumbor-venv"
    if not (venv / "bin" / "thumbor").exists():
        subprocess.run([sys.executable if sys.prefix == sys.base_prefix else "python3", "-m", "venv",
                        str(venv)], check=True)
        # OpenCV 5 dropped the Haar cascades thumbor's face detector is built on
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "thumbor",
                        "opencv-python-headless<5", "numpy"], check=True)
    return venv


def ensure_sharp() -> Path:
    folder = OUT / "sharp"
    if not (folder / "node_modules" / "sharp").exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BENCH / "peers" / "package.json", folder / "package.json")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=folder, check=True,
                       stdout=subprocess.DEVNULL)
    return folder / "node_modules"


def start_nginx(procs: Procs, name: str, prefix: Path, conf: str) -> int:
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    proc = procs.start(name, ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                              "-e", str(prefix / "logs" / "error.log"),
                              "-g", f"daemon off; pid {prefix / 'nginx.pid'};"])
    return proc.pid


def start_service(procs: Procs, tmp: Path, media: Path, detector: str) -> tuple[int, int, Path]:
    port = free_port()
    cfg = tmp / f"service-{detector}.toml"
    cfg.write_text(f'[server]\ngallery = false\n[cache]\ndir = "{tmp / ("cache-" + detector)}"\n'
                   f'max_size = "20GiB"\n[limits]\nqueue_limit = 1024\n'
                   f'[faces]\ndetector = "{detector}"\ndebug = false\n'
                   f'[[libraries]]\nid = "lib"\norigin = "{media}"\nmount = ""\nsecret = "x"\n')
    proc = procs.start(f"service-{detector}", [str(PY.parent / "preview-proxy"), "serve", "--config",
                                               str(cfg), "--port", str(port)])
    wait_http(port, "/healthz")
    return proc.pid, port, cfg


def measure(peer: Peer, paths: list[str], concurrency: int, seconds: float, tmp: Path) -> Stat:
    """One bounded run of ``peer`` at ``concurrency``: rate, latency, CPU per request, peak RSS."""
    if peer.kind == "floor":
        listing = tmp / "floor-paths.txt"
        listing.write_text("\n".join(paths))
        out = subprocess.run([str(PY), str(BENCH / "floors.py"), peer.mode, str(listing), "--threads",
                              str(min(concurrency, CORES)), "--seconds", str(seconds)],
                             capture_output=True, text=True, check=True, timeout=seconds + 120)
        r = json.loads(out.stdout)
        return Stat(r["rate"], r["p50"], r["p99"], r["cpu"] / max(1, r["completed"]), r["rss"],
                    r["completed"], r["errors"], 0.0)
    cpu0 = tree_cpu(peer.pid)
    with PeakRss(peer.pid) as rss:
        if peer.kind == "hot":
            r = wrk(peer.url, concurrency, seconds)
        else:
            listing = tmp / "paths.txt"
            listing.write_text("\n".join(paths))
            out = subprocess.run([str(PY), str(BENCH / "loadgen.py"), peer.base, str(listing),
                                  "--concurrency", str(concurrency), "--seconds", str(seconds),
                                  "--status", str(peer.status)],
                                 capture_output=True, text=True, check=True, timeout=seconds + 300)
            r = json.loads(out.stdout)
    cpu = tree_cpu(peer.pid) - cpu0
    n = max(1, r["completed"])
    return Stat(r["rate"], r["p50"], r["p99"], cpu / n, rss.peak, r["completed"], r["errors"],
                r["client_cpu"] / n)


def paths_for(peer: Peer, media: Media, tag: str, count: int) -> list[str]:
    names = media.sequence(count)
    if peer.kind == "floor":
        return [str(media.root / "photos" / n) for n in names]
    if peer.paths == "unique":
        return [f"/{p}?preview&size=200" for p in media.unique(tag, names)]
    prefix = {"thumbor": "/unsafe/200x200/smart/{origin}/photos/", "sharp": "/attention/photos/",
              "sharp-centre": "/centre/photos/"}[peer.paths]
    return [prefix + n for n in names]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="concurrency 1 and 8, shorter, 2 rounds")
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md and bench/peers.png")
    args = parser.parse_args()
    concs = (1, 8) if args.quick else (1, 8, 32)
    rounds, cold_s, hot_s = (2, 4.0, 3.0) if args.quick else (3, 8.0, 5.0)
    OUT.mkdir(exist_ok=True)
    thumbor_venv, sharp_modules = ensure_thumbor(), ensure_sharp()
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-", dir=OUT))
    (tmp / "logs").mkdir()
    procs = Procs(tmp / "logs")
    started = time.monotonic()
    try:
        media = Media(tmp / "media")
        oport = free_port()
        start_nginx(procs, "nginx-origin", tmp / "nginx-origin",
                    NGINX_STATIC.format(workers=1, port=oport, root=media.root))
        wait_http(oport)
        origin = f"127.0.0.1:{oport}"
        face_pid, face_port, face_cfg = start_service(procs, tmp, media.root, "auto")
        centre_pid, centre_port, _ = start_service(procs, tmp, media.root, "none")
        tport = free_port()
        (tmp / "thumbor.conf").write_text(THUMBOR_CONF)
        thumbor = procs.start("thumbor", [str(thumbor_venv / "bin" / "thumbor"), "--ip", "127.0.0.1",
                                          "--port", str(tport), "--conf", str(tmp / "thumbor.conf"),
                                          "--processes", str(CORES), "--log-level", "error"])
        sport = free_port()
        node_env = {**os.environ, "NODE_PATH": str(sharp_modules)}
        sharp = procs.start("sharp", ["node", str(BENCH / "peers" / "sharp_server.js"), str(sport),
                                      f"http://{origin}"], env=node_env)
        bport = free_port()
        bare = procs.start("bare", [str(PY), "-c", BARE, str(bport)])
        for port in (tport, sport, bport):
            wait_http(port)
        # one finished render: the cached 302 URL, its asset through the generated nginx.conf, and the
        # same bytes as a plain static file
        hot_path = "/api/v1/file/lib/-/photos/sharp_gain-map.jpg?preview&size=200"
        conn = http.client.HTTPConnection("127.0.0.1", face_port, timeout=60)
        conn.request("GET", hot_path)
        answer = conn.getresponse()
        answer.read()
        location = answer.headers["Location"]
        described = parse_render_uri(location.split("/_assets/", 1)[1].partition("?")[0])
        assert described is not None, location
        asset = tmp / "cache-auto" / described.rel
        (tmp / "static").mkdir()
        shutil.copyfile(asset, tmp / "static" / "preview.jpg")
        pport, gport = free_port(), free_port()
        plain_pid = start_nginx(procs, "nginx-plain", tmp / "nginx-plain",
                                NGINX_STATIC.format(workers="auto", port=pport, root=tmp / "static"))
        conf = subprocess.run([str(PY.parent / "preview-proxy"), "nginx-conf", "--config", str(face_cfg),
                               "--listen", f"127.0.0.1:{gport}", "--upstream", f"127.0.0.1:{face_port}",
                               "--user", "root"], capture_output=True, text=True, check=True).stdout
        gen_pid = start_nginx(procs, "nginx-generated", tmp / "nginx-generated", conf)
        wait_http(pport)
        wait_http(gport)

        peers = [
            Peer("preview-proxy face-aware (YuNet_n), cold", "cold", face_pid,
                 f"http://127.0.0.1:{face_port}/api/v1/file/lib/-", 302, "unique"),
            Peer("preview-proxy centre crop, cold", "cold", centre_pid,
                 f"http://127.0.0.1:{centre_port}/api/v1/file/lib/-", 302, "unique"),
            Peer(f"thumbor {thumbor_version(thumbor_venv)} smart (faces+features), {CORES} procs", "cold",
                 thumbor.pid, f"http://127.0.0.1:{tport}", 200, "thumbor"),
            Peer("sharp 0.34 attention", "cold", sharp.pid, f"http://127.0.0.1:{sport}", 200, "sharp"),
            Peer("sharp 0.34 centre", "cold", sharp.pid, f"http://127.0.0.1:{sport}", 200, "sharp-centre"),
            Peer("floor: raw pyvips + YuNet_n 320 px", "floor", mode="faces"),
            Peer("floor: raw pyvips centre", "floor", mode="centre"),
            Peer("bare aiohttp fixed 302", "hot", bare.pid, url=f"http://127.0.0.1:{bport}{hot_path}"),
            Peer("preview-proxy cached 302", "hot", face_pid, url=f"http://127.0.0.1:{face_port}{hot_path}"),
            Peer("nginx plain static file", "hot", plain_pid, url=f"http://127.0.0.1:{pport}/preview.jpg"),
            Peer("nginx generated conf, asset", "hot", gen_pid, url=f"http://127.0.0.1:{gport}{location}"),
        ]
        for rnd in range(rounds):
            for c in concs:
                for peer in peers:
                    if peer.kind == "floor" and c > 8:
                        continue  # floors run min(c, cores) threads: c=32 is the c=8 run again
                    seconds = hot_s if peer.kind == "hot" else cold_s
                    paths = [] if peer.kind == "hot" else paths_for(
                        peer, media, f"r{rnd}c{c}{peer.paths}", int(150 * seconds) + c)
                    paths = [p.replace("{origin}", origin) for p in paths]
                    stat = measure(peer, paths, c, seconds, tmp)
                    peer.runs.setdefault(c, []).append(stat)
                    print(f"round {rnd + 1}/{rounds} c={c:<2} {peer.name:<52} {stat.rate:10.1f}/s "
                          f"p50 {stat.p50:8.1f} ms p99 {stat.p99:8.1f} ms n={stat.n}"
                          + (f" errors={stat.errors}" if stat.errors else ""), flush=True)
        # peak RSS: 32 concurrent cold face-aware renders of the 8.3 MP photo
        names = ["sharp_gain-map.jpg"] * int(60 * cold_s + 32)
        rss_peer = peers[0]
        rss_paths = [f"/{p}?preview&size=200" for p in media.unique("rss", names)]
        rss = measure(rss_peer, rss_paths, 32, cold_s, tmp)
        print(f"32 concurrent 8.3 MP face-aware renders: peak RSS {rss.rss / 2**20:.0f} MiB, "
              f"{rss.rate:.1f}/s", flush=True)
        prof = profile(rss_peer, media, cold_s, tmp)
        elapsed = time.monotonic() - started
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(peers, concs, rounds, rss, prof, media.names, elapsed, args.quick, CORES)
    print(text)
    if args.write:
        chart(peers, concs, BENCH / "peers.png")
        write_section("peers", text)


def profile(peer: Peer, media: Media, seconds: float, tmp: Path) -> str:
    """py-spy on the face-aware service during a cold run at concurrency 8: top frames as Markdown
    (from py-spy's raw stacks), the flame graph in bench/out/profile.svg."""
    spy = str(PY.parent / "py-spy")
    duration = str(int(seconds) + 2)
    base = [spy, "record", "--pid", str(peer.pid), "--duration", duration, "--rate", "200", "--nonblocking"]
    raw = tmp / "profile.txt"
    spies = [subprocess.Popen([*base, "--format", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL),
             subprocess.Popen([*base, "-o", str(OUT / "profile.svg")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    try:
        time.sleep(1)
        names = media.sequence(int(150 * seconds))
        paths = [f"/{p}?preview&size=200" for p in media.unique("profile", names)]
        measure(peer, paths, 8, seconds, tmp)
    finally:
        for spy_proc in spies:
            try:
                spy_proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                spy_proc.wait()
    return profile_table(raw) if raw.exists() else "_py-spy could not record (no ptrace here?)._"


def thumbor_version(venv: Path) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-c", "import thumbor; print(thumbor.__version__)"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


if __name__ == "__main__":
    main()
