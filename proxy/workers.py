"""``serve --workers N``: N service processes on one port (SO_REUSEPORT), one supervisor.

Each worker is the ordinary single-process server started again with ``--workers 1 --reuse-port``
(a fresh interpreter: no libvips or OpenCV state crosses a fork). They share the cache folder
(a lock file per render key, so a render is made once), the store, and one folder of metrics values
(prometheus-client's multiprocess mode: any worker's ``/metrics`` is the whole service's). The
supervisor starts one
worker and waits until it serves before starting the others: a service that cannot start (the port
taken, a model that cannot be read, a cache folder that cannot be made) says so in one line, once,
and the supervisor exits with the worker's code instead of starting workers again forever. It
forwards SIGTERM/SIGINT, waits for every worker to finish what it has in flight, and exits 0; a
worker that dies on its own after it served is started again. Only the first start is fatal: a
restart that cannot start (a full disk, a model on NFS briefly unreadable) is tried again after a
pause that doubles up to RESTART_PAUSE_MAX, while the other workers keep serving.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from types import FrameType

from prometheus_client import multiprocess

from .metrics import MULTIPROC_DIR

RESTART_PAUSE = 1.0
RESTART_PAUSE_MAX = 30.0
# the exit code of a process that could not start; its supervisor does not start it again
STARTUP_FAILED = 3
_NO_RESTART = (2, STARTUP_FAILED)  # 2: a bad config


def restart_pause(code: int, pause: float) -> float:
    """How long to wait before starting again a worker that exited with ``code`` after the service
    had served; ``pause`` is the wait before its last start. A start that failed (2, 3) waits twice
    as long each time (capped); any other exit means the last start worked, so the wait is reset."""
    if code in _NO_RESTART:
        return min(pause * 2, RESTART_PAUSE_MAX)
    return RESTART_PAUSE


def startup_failed(reason: str) -> int:
    """Say why the service cannot start, in one line on stderr; the exit code to return."""
    print(f"preview-proxy: {' '.join(reason.split())}", file=sys.stderr)
    return STARTUP_FAILED


def listen(host: str, port: int, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets for ``host:port`` (every address the name has), bound before the app starts,
    so that a port in use is reported at once and by its address."""
    sockets: list[socket.socket] = []
    try:
        seen = set()
        for family, kind, proto, _name, address in socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _wait_ready(proc: subprocess.Popen[bytes], ready: int, stop: list[bool]) -> bool:
    """Until ``proc`` writes to its ready pipe (True), or exits or is told to stop (False)."""
    try:
        while not stop[0]:
            readable, _, _ = select.select([ready], [], [], 0.2)
            if readable:
                return os.read(ready, 1) == b"1"
            if proc.poll() is not None:
                return False
        return False
    finally:
        os.close(ready)


def supervise(n: int, child_args: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``n`` workers with ``python -m proxy serve <child_args> --workers 1 --reuse-port``
    (``env`` added to their environment), their metrics in one multiprocess folder."""
    with tempfile.TemporaryDirectory(prefix="preview-proxy-metrics-") as metrics_dir:
        return _supervise(n, child_args, {**(env or {}), MULTIPROC_DIR: metrics_dir})


def _supervise(n: int, child_args: list[str], env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "proxy", "serve", *child_args, "--workers", "1", "--reuse-port"]
    child_env = {**os.environ, **env}
    workers: list[subprocess.Popen[bytes]] = []
    stopping = [False]

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping[0] = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready, ready_w = os.pipe()
    workers.append(subprocess.Popen([*command, "--ready-fd", str(ready_w)], env=child_env,
                                    pass_fds=(ready_w,)))
    os.close(ready_w)
    if not _wait_ready(workers[0], ready, stopping) and not stopping[0]:
        code = workers[0].wait()
        return code if code in _NO_RESTART else STARTUP_FAILED
    if not stopping[0]:
        workers += [subprocess.Popen(command, env=child_env) for _ in range(n - 1)]
    pauses = [RESTART_PAUSE] * n  # per worker: how long before its next start
    due: dict[int, float] = {}  # worker index -> when to start it again
    while not stopping[0]:
        time.sleep(0.2)
        for i, proc in enumerate(workers):
            if stopping[0]:
                break
            if i in due:
                if time.monotonic() >= due[i]:
                    del due[i]
                    workers[i] = subprocess.Popen(command, env=child_env)
                continue
            if proc.poll() is None:
                continue
            pauses[i] = restart_pause(proc.returncode, pauses[i])
            print(f'{{"event": "worker_exited", "pid": {proc.pid}, "code": {proc.returncode}, '
                  f'"restart_in": {pauses[i]}}}', file=sys.stderr)
            # its gauges (queue depth, renders running) no longer count
            multiprocess.mark_process_dead(proc.pid, env[MULTIPROC_DIR])
            # a worker that dies at once must not spin the CPU, nor block the others' restarts
            due[i] = time.monotonic() + pauses[i]
    # a worker waiting for its restart already said how it ended
    codes = [proc.wait() for i, proc in enumerate(workers) if i not in due]
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
