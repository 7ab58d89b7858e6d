"""Real Varnish (Debian ``varnish``, default VCL) standing for a CDN in front of the service (loopback)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from processes import get, wait_http

VARNISHD = shutil.which("varnishd") or "/usr/sbin/varnishd"


@dataclass
class Varnish:
    """``varnishd -F -n DIR -a 127.0.0.1:PORT -b 127.0.0.1:BACKEND -s malloc,64m``: the default VCL,
    nothing of ours (the README's recipe)."""

    workdir: Path
    port: int
    backend: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir.with_suffix(".log")

    def start(self) -> Varnish:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [VARNISHD, "-F", "-n", str(self.workdir), "-a", f"127.0.0.1:{self.port}",
                 "-b", f"127.0.0.1:{self.backend}", "-s", "malloc,64m"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_http(self.port, "/healthz", proc=self.proc, log=self.log)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def get(self, path: str, method: str = "GET", headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        return get(self.port, path, method, headers)


def from_cache(headers: dict[str, str]) -> bool:
    """Did Varnish answer from its cache? A hit's ``X-Varnish`` names two transactions (this one and
    the one that stored the object), a miss or a pass only this one."""
    return len(headers["x-varnish"].split()) == 2
