"""The README's commands work as written, on a fresh copy of the repository.

Every fenced ``sh`` block of README.md is run, in order, in a temporary copy of the working tree:
the install-and-serve block in the background (on a free port: ``PREVIEW_PROXY_SERVER_PORT``, so
``127.0.0.1:8080`` in later blocks is rewritten to it), the others to completion. Lines of a block
written as ``# expected output`` must appear in what the command printed. A block marked
``sh no-run`` is the test command itself (it is what runs this test).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, free_port
from nginx_helpers import get

BLOCK = re.compile(r"^```(sh[^\n]*)\n(.*?)^```", re.S | re.M)
SKIP_PARTS = {".venv", "var", ".git", "__pycache__", ".pytest_cache", ".ruff_cache", "test-artifacts",
              "demo-media", "build"}


def blocks() -> list[tuple[str, str]]:
    return [(info.strip(), body) for info, body in BLOCK.findall((ROOT / "README.md").read_text())]


def copy_tree(dest: Path) -> None:
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if SKIP_PARTS & set(rel.parts) or path.suffix == ".egg-info" or ".egg-info" in str(rel):
            continue
        if path.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)


def test_the_readme_has_its_two_commands() -> None:
    bodies = [body for _info, body in blocks()]
    assert any("preview-proxy serve" in b and "pip install" in b for b in bodies)
    assert "bash scripts/test.sh" in [b.strip() for b in bodies]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci  # CI runs the README's test command


def expected_lines(body: str) -> list[str]:
    return [line[2:].split("...")[0].strip() for line in body.splitlines()
            if line.startswith("# ") and line[2:].split("...")[0].strip()]


@pytest.mark.skipif(os.environ.get("README_TEST_NESTED") == "0", reason="disabled by the caller")
def test_every_readme_command_runs_on_a_fresh_copy(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy_tree(repo)
    port = free_port()
    env = {**os.environ, "PREVIEW_PROXY_SERVER_PORT": str(port), "README_TEST_NESTED": "0"}
    env.pop("PREVIEW_PROXY_CONFIG", None)
    server: subprocess.Popen[bytes] | None = None
    ran = 0
    try:
        for info, body in blocks():
            if "no-run" in info:
                continue
            script = body.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            if "preview-proxy serve" in script:  # the long-running one
                log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed with the process
                server = subprocess.Popen(["bash", "-c", script], cwd=repo, env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)
                deadline = time.monotonic() + 600  # a first pip install takes a while
                while time.monotonic() < deadline and server.poll() is None:
                    try:
                        if get(port, "/healthz")[0] == 200:
                            break
                    except OSError:
                        time.sleep(1)
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
                ran += 1
                continue
            result = subprocess.run(["bash", "-c", script], cwd=repo, env=env, capture_output=True,
                                    text=True, timeout=120)
            assert result.returncode == 0, (script, result.stdout[-1000:], result.stderr[-1000:])
            for line in expected_lines(body):
                assert line in result.stdout, (script, line, result.stdout[-1000:])
            ran += 1
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    assert ran >= 2
    # the first run made the demo library, and the page a newcomer opens shows it
    assert any((repo / "var" / "demo-media").iterdir())
