"""The one way tests start the service: ``preview-proxy serve`` as a real process on 127.0.0.1.

Also the plain HTTP helpers every process test uses (wait for an address, one GET).
"""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import free_port


def wait_http(port: int, path: str = "/healthz", timeout: float = 30.0,
              proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    """Wait until 127.0.0.1:port answers ``path``; fail at once (with the log's tail) if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"the process exited with {proc.returncode} before answering: {tail}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path}")


def get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
        timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:port; the status, the headers (lower-case names) and the body."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


@dataclass
class Service:
    """``preview-proxy serve --config FILE`` on a free port (``extra``: more arguments, e.g. ``--workers``).

    Its stdout and stderr go to ``log`` (beside the config); ``start`` may be called again after a stop
    or a kill, on the same port.
    """

    config_path: Path
    port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.config_path.with_suffix(f".{self.port}.log")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "proxy", "serve", "--config", str(self.config_path),
                "--host", "127.0.0.1", "--port", str(self.port), *self.extra]

    def start(self, timeout: float = 30.0) -> Service:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env)
        wait_http(self.port, timeout=timeout, proc=self.proc, log=self.log)
        return self

    def get(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
            timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        return get(self.port, path, method, headers, timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Send ``sig`` (if still running) and wait; the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise
        return self.proc.returncode if self.proc else None
