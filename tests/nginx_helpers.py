"""Real nginx (and headless Chromium) for the production tests, loopback only. The service process
itself is ``processes.Service`` (re-exported here)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from processes import Service, get, wait_http

from proxy.config import Config
from proxy.nginx import render_nginx_conf

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
__all__ = ["CHROMIUM", "NGINX", "Nginx", "Service", "chromium", "get", "wait_http"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or ""


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
             "-g", "daemon off;"],  # its pid file is the config's own, inside the prefix
            stdout=subprocess.DEVNULL, stderr=open(self.prefix / "logs" / "stderr", "wb"))  # noqa: SIM115
        wait_http(self.port, "/healthz")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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
