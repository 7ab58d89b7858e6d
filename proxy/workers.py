"""``serve --workers N``: N service processes on one port (SO_REUSEPORT), one supervisor.

Each worker is the ordinary single-process server started again with ``--workers 1 --reuse-port``
(a fresh interpreter: no libvips or OpenCV state crosses a fork). They share the cache folder
(a lock file per render key, so a render is made once), the store, and one folder of metrics values
(prometheus-client's multiprocess mode: any worker's ``/metrics`` is the whole service's). The
supervisor forwards SIGTERM/SIGINT, waits for every worker to finish what it has in flight, and
exits 0; a worker that dies on its own is started again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from prometheus_client import multiprocess

from .metrics import MULTIPROC_DIR

RESTART_PAUSE = 1.0


def supervise(n: int, child_args: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``n`` workers with ``python -m proxy serve <child_args> --workers 1 --reuse-port``
    (``env`` added to their environment), their metrics in one multiprocess folder."""
    with tempfile.TemporaryDirectory(prefix="preview-proxy-metrics-") as metrics_dir:
        return _supervise(n, child_args, {**(env or {}), MULTIPROC_DIR: metrics_dir})


def _supervise(n: int, child_args: list[str], env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "proxy", "serve", *child_args, "--workers", "1", "--reuse-port"]
    child_env = {**os.environ, **env}
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    workers = [subprocess.Popen(command, env=child_env) for _ in range(n)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(workers):
            if proc.poll() is not None and not stopping:
                print(f'{{"event": "worker_exited", "pid": {proc.pid}, "code": {proc.returncode}}}',
                      file=sys.stderr)
                # its gauges (queue depth, renders running) no longer count
                multiprocess.mark_process_dead(proc.pid, env[MULTIPROC_DIR])
                time.sleep(RESTART_PAUSE)  # a worker that cannot start must not spin the CPU
                workers[i] = subprocess.Popen(command, env=child_env)
    codes = [proc.wait() for proc in workers]
    return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1
