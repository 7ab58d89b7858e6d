"""Metrics across workers: real processes sharing one PROMETHEUS_MULTIPROC_DIR, as under
``serve --workers N``, read the way any worker's ``/metrics`` reads them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.metrics import MULTIPROC_DIR, Metrics, exposition

WORKER = """
import sys
from proxy.metrics import Metrics
m = Metrics()
m.cache_bytes.set(float(sys.argv[1]))
print("set", flush=True)
sys.stdin.read()  # alive until the test closes stdin: the live* modes count live workers only
"""


def worker(value: int, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WORKER, str(value)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=Path(__file__).parent.parent)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "set"
    return proc


def test_cache_size_is_the_value_a_worker_set_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that saw the folder before an eviction or a purge must not keep the old, larger
    size in the scrape: the most recent value of a live worker is the folder's."""
    env = {**os.environ, MULTIPROC_DIR: str(tmp_path)}
    before = worker(5000, env)  # the size before a purge
    after = worker(1200, env)   # another worker, after it
    try:
        monkeypatch.setenv(MULTIPROC_DIR, str(tmp_path))
        text = exposition(Metrics()).decode()
        assert re.search(r"^preview_cache_bytes 1200\.0$", text, re.M), text
    finally:
        for proc in (before, after):
            proc.communicate("")
