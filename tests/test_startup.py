"""Start-up failures of ``preview-proxy serve`` (one process and ``--workers N``): one line on stderr
naming the cause, a non-zero exit, no traceback, no worker started again and again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import config_raw, free_port, write_config

WORKERS = [[], ["--workers", "2"]]


def serve(config: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--host", "127.0.0.1",
               "--port", str(port), *extra]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        # the timeout only bounds a failing run: a supervisor that restarts workers forever never returns
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the supervisor and its workers
        out, err = proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def assert_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode not in (0, None), result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert all(word in lines[0] for word in words), lines
    assert "Traceback" not in result.stderr + result.stdout
    assert '"event": "start"' not in result.stdout  # it never served


@pytest.mark.parametrize("extra", WORKERS, ids=["one process", "two workers"])
def test_port_in_use(tmp_path: Path, media: Path, extra: list[str]) -> None:
    config = write_config(tmp_path / "config.toml", config_raw(tmp_path, media))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(config, port, *extra)
    assert_one_line(result, f"127.0.0.1:{port}", "in use")


@pytest.mark.parametrize("extra", WORKERS, ids=["one process", "two workers"])
def test_a_failing_start_up_step(tmp_path: Path, media: Path, extra: list[str]) -> None:
    """The app's own start-up fails (here: the cache folder cannot be made, a file is in the way)."""
    (tmp_path / "file").write_text("not a folder")
    config = write_config(tmp_path / "config.toml", config_raw(
        tmp_path, media, cache={"dir": str(tmp_path / "file" / "cache")}))
    result = serve(config, free_port(), *extra)
    assert_one_line(result, "start-up failed", str(tmp_path / "file" / "cache"))


@pytest.mark.parametrize("extra", WORKERS, ids=["one process", "two workers"])
def test_a_bad_config_is_reported_before_the_demo_is_seeded(tmp_path: Path, extra: list[str]) -> None:
    demo = tmp_path / "demo-media"
    config = write_config(tmp_path / "config.toml", {
        "cache": {"dir": str(tmp_path / "cache"), "version_ttl": float("nan")},
        "libraries": [{"id": "demo", "origin": str(demo), "secret": "s"}]})
    result = serve(config, free_port(), *extra)
    assert result.returncode == 2 and "[cache] version_ttl" in result.stderr, result
    assert "Traceback" not in result.stderr
    assert not demo.exists()  # nothing done for a config that will not run


def test_the_demo_folder_is_seeded_for_a_valid_config(tmp_path: Path) -> None:
    """The check above cannot pass by never seeding: a valid config gets its demo photos."""
    from processes import Service

    demo = tmp_path / "demo-media"
    config = write_config(tmp_path / "config.toml", {
        "cache": {"dir": str(tmp_path / "cache")}, "faces": {"detector": "none"},
        "libraries": [{"id": "demo", "origin": str(demo), "secret": "s"}]})
    service = Service(config).start()
    try:
        assert any(demo.iterdir())
    finally:
        assert service.stop() == 0


@pytest.mark.parametrize("extra", WORKERS, ids=["one process", "two workers"])
def test_a_model_that_cannot_load(tmp_path: Path, media: Path, extra: list[str]) -> None:
    from proxy.faces import MODEL_DIR, MODEL_NAME

    model = tmp_path / "model.onnx"
    model.write_bytes((MODEL_DIR / MODEL_NAME).read_bytes()[:1000])  # truncated
    config = write_config(tmp_path / "config.toml", config_raw(
        tmp_path, media, faces={"detector": "auto", "model": str(model)}))
    result = serve(config, free_port(), *extra)
    assert_one_line(result, str(model))
