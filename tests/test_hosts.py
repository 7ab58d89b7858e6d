"""Several hosts (API.md section 10), all real processes on 127.0.0.1: three hosts, each with its own
cache folder, its own copy of the library, ``serve --workers 2`` and its own nginx from ``nginx-conf``
(listing only its own service), a plain round-robin nginx in front, one redis-server for tokens.

Every preview's asset resolves through every host; a host killed with -9 loses only what it had in
flight.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import pyvips
from conftest import free_port, write_media
from nginx_helpers import NGINX, Nginx, Service, get, wait_http

from proxy.config import load_config

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
SECRET = "hosts-test-secret"
FILES = [quote(name) for name in
         ["landscape.jpg", "portrait.jpg", "pic.webp", "alpha.png", "still.gif", "相册 一/照片 1.jpg"]]


@dataclass
class Host:
    """One host: ``serve --workers 2`` and its own nginx."""

    root: Path
    redis: str
    service: Service | None = None
    nginx: Nginx | None = None

    def start(self, media: Path) -> None:
        # a copy of the library: other inodes, same sizes and mtimes (copy2), so the same versions
        shutil.copytree(media, self.root / "media")
        config = self.root / "config.toml"
        config.write_text(f"""
[cache]
dir = "{self.root / 'cache'}"
sign_secret = "{SECRET}"
[store]
url = "{self.redis}"
[faces]
detector = "none"
[limits]
render_concurrency = 1
[[libraries]]
id = "lib"
origin = "{self.root / 'media'}"
secret = "lib-secret"
[[libraries]]
id = "priv"
origin = "{self.root / 'media'}"
secret = "priv-secret"
public_read = false
""")
        self.service = Service(config, extra=["--workers", "2"]).start(timeout=60)
        self.nginx = Nginx(self.root / "nginx", free_port())
        self.nginx.start(load_config(config), [f"127.0.0.1:{self.service.port}"])

    def kill(self) -> None:
        """kill -9 the whole host at once, as a power cut: nginx (master and workers) first, then the
        service (supervisor and workers). Killed the other way round, the host's nginx would live on
        for a moment with no service behind it and answer 502s, which no host that lost its power
        does: the balancer retries a refused or cut connection, not a 502."""
        procs = [proc for proc in (self.nginx and self.nginx.proc, self.service and self.service.proc)
                 if proc is not None and proc.poll() is None]
        pids = [pid for proc in procs for pid in (proc.pid, *_children(proc.pid))]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(10)

    def stop(self) -> None:
        if self.nginx:
            self.nginx.stop()
        if self.service:
            self.service.stop()


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (a supervisor's workers, nginx's workers)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def balancer_conf(prefix: Path, port: int, hosts: list[Host]) -> Path:
    """A plain round-robin load balancer: no affinity, no knowledge of the service."""
    servers = "\n".join(f"        server 127.0.0.1:{h.nginx.port} max_fails=1 fail_timeout=30s;"
                        for h in hosts if h.nginx)
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    conf = prefix / "lb.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(f"""{user}worker_processes 1;
error_log logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream hosts {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://hosts;
            proxy_set_header Host $host;
            proxy_next_upstream error timeout;
        }}
    }}
}}
""")
    return conf


@dataclass
class Cluster:
    hosts: list[Host]
    lb_port: int

    def get(self, path: str, port: int | None = None) -> tuple[int, dict[str, str], bytes]:
        return get(port or self.lb_port, path)

    def location(self, path: str) -> str:
        status, headers, body = self.get(path)
        assert status == 302, (status, body[:300])
        parts = urlsplit(headers["location"])
        return parts.path + (f"?{parts.query}" if parts.query else "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("hosts")
    media = write_media(root / "media")
    hosts = [Host(root / f"host{i}", redis_server) for i in range(3)]
    lb: subprocess.Popen[bytes] | None = None
    try:
        for host in hosts:
            host.start(media)
        lb_port = free_port()
        conf = balancer_conf(root / "lb", lb_port, hosts)
        lb = subprocess.Popen([NGINX, "-p", str(root / "lb"), "-c", str(conf), "-g",
                               f"daemon off; pid {root / 'lb' / 'nginx.pid'};"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        wait_http(lb_port, "/healthz")
        yield Cluster(hosts, lb_port)
    finally:
        if lb is not None:
            lb.send_signal(signal.SIGQUIT)
            lb.wait(10)
        for host in hosts:
            host.stop()


def _image(status: int, body: bytes) -> pyvips.Image:
    assert status == 200, (status, body[:300])
    return pyvips.Image.new_from_buffer(body, "")


def test_every_preview_resolves_through_every_host(cluster: Cluster) -> None:
    for name in FILES:
        for size in (48, 120):
            loc = cluster.location(f"/api/v1/file/lib/-/{name}?preview&size={size}")
            for host in cluster.hosts:
                assert host.nginx is not None
                status, headers, body = cluster.get(loc, host.nginx.port)
                image = _image(status, body)
                assert (image.width, image.height) == (size, size), (name, host.nginx.port)
                assert headers["cache-control"] == "public, max-age=31536000, immutable"
                assert headers["content-type"].startswith("image/")
            # made once per host at most: now every host has it on its own disk
            for host in cluster.hosts:
                assert host.nginx is not None
                status, headers, _ = cluster.get(loc, host.nginx.port)
                assert status == 200 and headers["server"].startswith("nginx")


def test_signed_private_assets_resolve_through_every_host(cluster: Cluster) -> None:
    import json

    status, _, body = cluster.get("/api/v1/token?library_id=priv&library_secret=priv-secret")
    assert status == 200
    token = json.loads(body)["accessToken"]
    loc = cluster.location(f"/api/v1/file/priv/-/landscape.jpg?preview&size=70&access_token={token}")
    assert "/p/" in loc and "md5=" in loc
    for host in cluster.hosts:
        assert host.nginx is not None
        image = _image(*cluster.get(loc, host.nginx.port)[::2])
        assert image.width == 70
        unsigned = loc.partition("?")[0]
        assert cluster.get(unsigned, host.nginx.port)[0] == 403
        path, _, query = loc.partition("?")
        folder, key, described = path.rsplit("/", 2)
        flipped = f"{folder}/{key[:-1]}{'1' if key.endswith('0') else '0'}/{described}"
        for tampered in (f"{path}?{query[:-3]}000", f"{flipped}?{query}"):  # expires, then the path
            assert cluster.get(tampered, host.nginx.port)[0] == 403, tampered


def test_a_killed_host_loses_only_its_requests_in_flight(cluster: Cluster) -> None:
    locations = [cluster.location(f"/api/v1/file/lib/-/{name}?preview&width_size={w}")
                 for name in FILES for w in (33, 66)]
    failures: list[tuple[int, str]] = []
    done = 0
    stop = threading.Event()
    lock = threading.Lock()

    def client(n: int) -> None:
        nonlocal done
        i = n
        while not stop.is_set() and i < n + 400:
            name = FILES[i % len(FILES)]
            for path in (f"/api/v1/file/lib/-/{name}?preview&width_size={40 + i % 50}",
                         locations[i % len(locations)]):
                try:
                    status, headers, body = cluster.get(path)
                    if status == 302:
                        status, _, body = cluster.get(cluster_path(headers["location"]))
                except OSError as exc:
                    status, body = 0, repr(exc).encode()
                with lock:
                    done += 1
                    if status != 200:
                        failures.append((status, body[:100].decode("utf-8", "replace")))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    while True:  # kill mid-run: once the clients are well under way
        with lock:
            if done >= 40:
                break
        threading.Event().wait(0.05)
    cluster.hosts[2].kill()
    with lock:
        at_kill = done
    for t in threads:
        t.join(300)
    stop.set()
    assert done > at_kill + 40  # the run went on after the kill
    # at most the requests in flight at the kill (one per client) fail; nginx retries the others
    assert len(failures) <= len(threads), failures


def cluster_path(location: str) -> str:
    parts = urlsplit(location)
    return parts.path + (f"?{parts.query}" if parts.query else "")
