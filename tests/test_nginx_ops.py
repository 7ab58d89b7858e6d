"""nginx as an operator runs it: the commands of nginx/README.md, as a non-root user, with the config
``nginx-conf`` prints (its pid file and temporary files inside the prefix; the system's nginx never
touched); and the retry rule: a request goes to another node only when it never reached a service."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT, config_raw, free_port, write_config, write_media
from nginx_helpers import NGINX, Nginx, Service, get, wait_http

from proxy.config import load_config

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)
SYSTEM_PID = Path("/run/nginx.pid")


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A temporary folder every user can enter (pytest's are 0700): nginx's workers read renders in it."""
    folder = Path(tempfile.mkdtemp(prefix="preview-nginx-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def shim(folder: Path) -> dict[str, str]:
    """The environment the README's commands run in: ``preview-proxy`` of this venv on PATH and, when
    the tests run as root, an ``nginx`` that runs as ``nobody`` (an ordinary user)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    if os.geteuid() == 0:
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        (bin_dir / "nginx").write_text(f'#!/bin/sh\nexec {runuser} -u nobody -- {NGINX} "$@"\n')
        (bin_dir / "nginx").chmod(0o755)
    venv_bin = Path(os.sys.executable).parent
    return {**os.environ, "PATH": f"{bin_dir}:{venv_bin}:{os.environ['PATH']}"}


def running(pid: int) -> bool:
    """``pid`` is a live process (not gone, not a zombie nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def masters_of(prefix: Path) -> list[int]:
    """nginx masters started with ``-p prefix`` (found by their command line: a failed start leaves
    no pid file to find them by)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().decode(errors="replace")
            if proc.name.isdigit() and str(prefix) in command:
                found.append(int(proc.name))
        except OSError:
            continue
    return [pid for pid in found if running(pid)]


def system_pid_state() -> tuple[bool, float, bytes]:
    if not SYSTEM_PID.exists():
        return False, 0.0, b""
    return True, SYSTEM_PID.stat().st_mtime, SYSTEM_PID.read_bytes()


def test_the_readme_commands_run_nginx_as_an_ordinary_user(open_folder: Path) -> None:
    import subprocess

    media = write_media(open_folder / "media")
    library = {"id": "lib", "origin": str(media), "mount": "/media/", "secret": "s"}
    config = write_config(open_folder / "config.toml", config_raw(open_folder, media, libraries=[library]))
    env = shim(open_folder)
    service = Service(config).start()
    port, prefix = free_port(), open_folder / "nginx"
    start, stop = BLOCK.findall((ROOT / "nginx" / "README.md").read_text())[:2]
    assert "DIR=" in start and "-s quit" in stop

    def run(block: str) -> None:
        script = (block.replace("/var/lib/preview-nginx", str(prefix))
                  .replace("config/preview-proxy.toml", str(config))
                  .replace("0.0.0.0:8081", f"127.0.0.1:{port}")
                  .replace("127.0.0.1:8080", f"127.0.0.1:{service.port}"))
        # one shell session, as the operator's: DIR stays set between the blocks. umask 000: the
        # folders made as root by the README's mkdir stay writable by nginx's user
        result = subprocess.run(["bash", "-ec", f"umask 000\nDIR={prefix}\n{script}"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (script, result.stdout, result.stderr)

    before = system_pid_state()
    try:
        run(start)
        wait_http(port)
        master = int((prefix / "nginx.pid").read_text())
        if os.geteuid() == 0:
            assert Path(f"/proc/{master}").stat().st_uid == 65534  # nobody's
        status, headers, _ = get(port, "/media/landscape.jpg?preview&size=64")
        assert status == 302, status
        status, asset, body = get(port, headers["location"])
        assert status == 200 and asset["server"].startswith("nginx") and body[:2] == b"\xff\xd8"
        assert {p.name for p in prefix.iterdir()} >= {"nginx.pid", "logs", "client_body_temp", "proxy_temp"}
        run(stop.splitlines()[-1] + "\n")  # -s quit
        for _ in range(200):
            if not running(master):
                break
            time.sleep(0.05)
        else:
            pytest.fail("nginx did not stop on -s quit")
        assert system_pid_state() == before  # the system's nginx pid file untouched
    finally:
        for pid in masters_of(prefix):  # SIGTERM: a master that stops takes its workers with it
            os.kill(pid, signal.SIGTERM)
        service.stop()


class FailingOrigin(BaseHTTPRequestHandler):
    """An origin in an outage: 500 for everything (the service answers 502 OriginError)."""

    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


def node_answers(node: Service, status: int) -> float:
    text = get(node.port, "/metrics")[2].decode()
    pattern = rf'preview_requests_total\{{route="/api/v1/file/{{rest}}",status="{status}"\}} ([\d.]+)'
    return sum(float(v) for v in re.findall(pattern, text))


def test_an_answer_is_never_retried_on_another_node(tmp_path: Path) -> None:
    origin = ThreadingHTTPServer(("127.0.0.1", 0), FailingOrigin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    config = write_config(tmp_path / "config.toml", config_raw(
        tmp_path, write_media(tmp_path / "media"),
        libraries=[{"id": "web", "origin": f"http://127.0.0.1:{origin.server_address[1]}/", "secret": "s"}]))
    nodes = [Service(config).start(), Service(config).start()]
    nginx = Nginx(tmp_path / "nginx", free_port())
    try:
        nginx.start(load_config(config), [f"127.0.0.1:{n.port}" for n in nodes])
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            status, _, body = get(nginx.port, f"/api/v1/file/web/-/{name}?preview&size=64")
            assert status == 502 and b"OriginError" in body
        # each request was answered by one node: none was passed on after a node's 502
        assert sum(node_answers(n, 502) for n in nodes) == 3
        # a node that is down (connection refused) is skipped: the request never reached it
        nodes[0].stop(signal.SIGKILL)
        assert all(get(nginx.port, "/healthz")[0] == 200 for _ in range(6))
    finally:
        nginx.stop()
        for node in nodes:
            node.stop(signal.SIGKILL)
        origin.shutdown()


def test_retries_end_long_before_the_read_timeout(tmp_path: Path) -> None:
    """A render slower than the read timeout is not sent to a second node (rendered twice)."""
    from proxy.nginx import render_nginx_conf

    media = write_media(tmp_path / "media")
    conf = render_nginx_conf(load_config(write_config(tmp_path / "c.toml", config_raw(tmp_path, media))),
                             "127.0.0.1:1", ["127.0.0.1:2", "127.0.0.1:3"])
    for block in re.findall(r"location (?:/|@api) \{(.*?)\n        \}", conf, re.S):
        seconds = {k: int(v) for k, v in re.findall(r"proxy_(\w+_timeout) (\d+)s;", block)}
        retry_on = re.search(r"proxy_next_upstream ([^;]+);", block).group(1).split()
        assert not [c for c in retry_on if c.startswith("http_") or c == "non_idempotent"], retry_on
        assert 0 < seconds["next_upstream_timeout"] < seconds["read_timeout"], seconds
        assert seconds["connect_timeout"] <= seconds["next_upstream_timeout"], seconds
