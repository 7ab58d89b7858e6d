"""Real nginx and real service processes for the production tests (loopback only)."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import free_port

from proxy.config import Config
from proxy.nginx import render_nginx_conf

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or ""


def wait_http(port: int, path: str = "/healthz", timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path}")


def get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


@dataclass
class Nginx:
    prefix: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, config: Config, upstreams: list[str]) -> None:
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        # as root, nginx's workers would run as "nobody", who cannot enter pytest's 0700 folders
        user = "root" if os.geteuid() == 0 else ""
        conf = render_nginx_conf(config, f"127.0.0.1:{self.port}", upstreams, user=user)
        (self.prefix / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
             "-g", f"daemon off; pid {self.prefix / 'nginx.pid'};"],
            stdout=subprocess.DEVNULL, stderr=open(self.prefix / "logs" / "stderr", "wb"))  # noqa: SIM115
        wait_http(self.port, "/healthz")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@dataclass
class Service:
    """``preview-proxy serve`` as a real process on a free port."""

    config_path: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    def start(self) -> None:
        log = open(self.config_path.with_suffix(f".{self.port}.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(self.config_path),
             "--host", "127.0.0.1", "--port", str(self.port), *self.extra],
            stdout=log, stderr=subprocess.STDOUT)
        wait_http(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            return self.proc.wait(timeout=60)
        return self.proc.returncode if self.proc else None


def chromium(url: str, profile: Path, screenshot: Path | None = None, size: str = "1100,700") -> str:
    """Load ``url`` in headless Chromium; return the DOM after load (and save a screenshot)."""
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=15000", f"--window-size={size}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*flags, f"--screenshot={screenshot}", url], capture_output=True, timeout=120)
    return dom
