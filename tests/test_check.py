"""``preview-proxy check``: says when all is well, finds an HTTP origin whose prefix is wrong, loads the
face model, and names config mistakes for what they are."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import config_raw, write_config

from proxy.__main__ import main


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server(tmp_path: Path, media: Path) -> Iterator[str]:
    """A plain web server whose photos are under /photos/ (a folder answers 200, a missing one 404)."""
    root = tmp_path / "www"
    shutil.copytree(media, root / "photos")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def run_check(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str, **sections: object
              ) -> tuple[int, str, str]:
    config = write_config(tmp_path / "check.toml", config_raw(tmp_path, tmp_path / "media", **sections))
    code = main(["check", "--config", str(config), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def web(origin: str) -> dict[str, object]:
    return {"libraries": [{"id": "web", "origin": origin, "secret": "s"}]}


def test_all_well_is_said(tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(tmp_path, capsys)
    assert code == 0 and "all well" in out and "problem" not in out


def test_an_http_origin_with_a_wrong_prefix(tmp_path: Path, media: Path, web_server: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(tmp_path, capsys, **web(f"{web_server}/photos/"))
    assert code == 0 and "all well" in out, out
    code, out, _ = run_check(tmp_path, capsys, **web(f"{web_server}/pictures/"))
    assert code == 1 and "prefix looks wrong" in out and "all well" not in out, out


def test_a_probe_file_decides_for_origins_without_folders(tmp_path: Path, media: Path, web_server: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(tmp_path, capsys, "--probe", "web:landscape.jpg", **web(f"{web_server}/photos/"))
    assert code == 0 and "all well" in out, out
    code, out, _ = run_check(tmp_path, capsys, "--probe", "web:landscape.jpg", **web(f"{web_server}/"))
    assert code == 1 and "landscape.jpg is not found" in out and "prefix looks wrong" not in out, out
    code, _, err = run_check(tmp_path, capsys, "--probe", "nonsense")
    assert code == 2 and "LIBRARY:PATH" in err


def test_the_face_model_is_loaded(tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"this is not an ONNX model")
    code, out, _ = run_check(tmp_path, capsys, faces={"detector": "yunet", "model": str(model)})
    assert code == 1 and "problem" in out and str(model) in out and "all well" not in out, out
    code, out, _ = run_check(tmp_path, capsys, faces={"detector": "yunet"})  # the shipped model
    assert code == 0 and "all well" in out, out


def test_config_mistakes_are_named(tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_check(tmp_path, capsys, **web("ftp://files.example.com/photos"))
    assert code == 2 and "ftp:// origins are not supported" in err and "does not exist" not in err
    code, _, err = run_check(tmp_path, capsys, libraries=[{"id": "Bad Id!", "origin": str(media)}])
    assert code == 2 and "'Bad Id!' is not a library id" in err and "required" not in err
