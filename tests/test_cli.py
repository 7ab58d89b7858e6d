"""The operator's command line: every verb has --help; warm, cache stats/purge, check, nginx-conf."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import config_raw, renders, write_config

from proxy.__main__ import main

VERBS = [["serve"], ["warm"], ["cache"], ["cache", "stats"], ["cache", "purge"], ["check"], ["nginx-conf"],
         ["token"], ["token", "create"]]


def write_cli_config(tmp_path: Path, media: Path, origin: str | None = None, detector: str = "none",
                     model: str = "") -> Path:
    return write_config(tmp_path / "config.toml", config_raw(
        tmp_path, media, faces={"detector": detector, "model": model},
        libraries=[{"id": "lib", "origin": origin or str(media), "secret": "s"}]))


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help(verb: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*verb, "--help"])
    assert exit_.value.code == 0
    assert "usage: preview-proxy" in capsys.readouterr().out


def test_top_level_help_lists_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("serve", "warm", "cache", "check", "nginx-conf", "token"):
        assert verb in out


def test_warm_renders_once_then_skips(tmp_path: Path, media: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    config = write_cli_config(tmp_path, media)
    images = (".jpg", ".png", ".webp", ".gif")
    previewable = [p for p in media.rglob("*") if p.is_file() and p.suffix in images]
    assert main(["warm", "--config", str(config), "--library", "lib", "--sizes", "64,32", "--quiet"]) == 1
    out = capsys.readouterr().out
    # broken.jpg cannot be decoded: reported with its reason, the rest rendered
    assert f"rendered {2 * (len(previewable) - 1)}, skipped 0" in out
    assert "1 x UnsupportedMedia" in out and "failed 1 files" in out  # once per file, not per size
    assert len(renders(tmp_path / "cache")) == 2 * (len(previewable) - 1)
    assert main(["warm", "--config", str(config), "--library", "lib", "--sizes", "64", "--quiet",
                 "landscape.jpg", "portrait.jpg"]) == 0
    assert "rendered 0, skipped 2" in capsys.readouterr().out


def test_cache_stats_and_purge(tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_cli_config(tmp_path, media)
    main(["warm", "--config", str(config), "--library", "lib", "--sizes", "40", "--quiet",
          "landscape.jpg", "portrait.jpg", "astronaut.png"])
    capsys.readouterr()
    assert main(["cache", "stats", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "3 renders" in out and "lib: 3 renders" in out
    old = renders(tmp_path / "cache", ".png")[0]
    os.utime(old, (time.time() - 10 * 86400, time.time() - 10 * 86400))
    assert main(["cache", "purge", "--config", str(config), "--older-than", "7d"]) == 0
    assert "removed 1 renders" in capsys.readouterr().out and not old.exists()
    assert main(["cache", "purge", "--config", str(config), "--library", "lib"]) == 0
    assert "removed 2 renders" in capsys.readouterr().out
    assert main(["cache", "purge", "--config", str(config), "--older-than", "soon"]) == 2


def test_check_reports_an_unreachable_origin(tmp_path: Path, media: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(write_cli_config(tmp_path, media, detector="auto"))]) == 0
    assert "face detector: yunet" in capsys.readouterr().out  # the shipped model, loaded
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not a model")
    assert main(["check", "--config", str(write_cli_config(tmp_path, media, None, "auto", str(model)))]) == 1
    assert f"cannot load {model}" in capsys.readouterr().out
    bad = write_cli_config(tmp_path, media, origin="http://127.0.0.1:9/")
    assert main(["check", "--config", str(bad)]) == 1
    assert "http://127.0.0.1:9/ is unreachable" in capsys.readouterr().out


def test_a_bad_config_names_the_key_and_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nport = "eighty"\n[[libraries]]\nid = "x"\norigin = "/nonexistent"\n')
    assert main(["check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "[server] port" in err and "/nonexistent" in err


def test_nginx_conf_prints_a_config(tmp_path: Path, media: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_cli_config(tmp_path, media)
    assert main(["nginx-conf", "--config", str(config), "--listen", "127.0.0.1:8081",
                 "--upstream", "127.0.0.1:9001", "--upstream", "127.0.0.1:9002"]) == 0
    out = capsys.readouterr().out
    assert "server 127.0.0.1:9001" in out and "server 127.0.0.1:9002" in out
    assert "listen 127.0.0.1:8081" in out
    assert main(["nginx-conf", "--config", str(config), "--listen", "nonsense"]) == 2


def test_nginx_conf_names_the_perl_module_of_the_nginx_host(tmp_path: Path, media: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """nginx may run elsewhere (its own container): where its perl module is can be said, or that it
    has none (then signed assets say ``private, no-cache``)."""
    config = write_config(tmp_path / "signed.toml", config_raw(tmp_path, media, cache={"sign_secret": "x"}))
    base = ["nginx-conf", "--config", str(config), "--listen", "127.0.0.1:8081"]
    assert main([*base, "--perl-module", "/etc/nginx/modules/ngx_http_perl_module.so"]) == 0
    out = capsys.readouterr().out
    assert "load_module /etc/nginx/modules/ngx_http_perl_module.so;" in out
    assert "private, max-age=$preview_private_max_age" in out
    assert main([*base, "--perl-module", "none"]) == 0
    out = capsys.readouterr().out
    assert "load_module" not in out and "perl_set" not in out and "private, no-cache" in out


async def test_start_up_warns_of_an_unreachable_origin(
        aiohttp_client, make_config, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from proxy.app import create_app

    cfg = make_config(faces={"detector": "auto"},
                      libraries=[{"id": "web", "origin": "http://127.0.0.1:9/", "secret": "s"}])
    caplog.set_level("WARNING", logger="proxy")
    await aiohttp_client(create_app(cfg))
    for _ in range(100):
        if "origin_problem" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "http://127.0.0.1:9/ is unreachable" in caplog.text


def test_token_create_asks_the_running_service(tmp_path: Path, media: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from processes import Service, get

    config = write_config(tmp_path / "private.toml", config_raw(
        tmp_path, media, cache={"sign_secret": "sign"},
        libraries=[{"id": "priv", "origin": str(media), "secret": "priv-secret", "public_read": False}]))
    service = Service(config)
    service.start()
    try:
        url = f"http://127.0.0.1:{service.port}"
        assert main(["token", "create", "--config", str(config), "--library", "priv", "--admin",
                     "--url", url]) == 0
        token = json.loads(capsys.readouterr().out)["accessToken"]
        path = "/api/v1/file/priv/-/landscape.jpg?preview&size=50"
        assert get(service.port, path)[0] == 400  # EmptyAccessToken
        assert get(service.port, f"{path}&access_token={token}")[0] == 302
    finally:
        service.stop()
    assert main(["token", "create", "--config", str(config), "--library", "priv", "--url", url]) == 1
    assert "no service at" in capsys.readouterr().err


def test_warm_a_space_of_a_multi_tenant_library(tmp_path: Path, media: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    root = tmp_path / "tenants"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    shutil.copyfile(media / "landscape.jpg", root / "a" / "one.jpg")
    shutil.copyfile(media / "portrait.jpg", root / "b" / "other.jpg")
    config = write_config(tmp_path / "multi.toml", config_raw(
        tmp_path, media, libraries=[{"id": "m", "origin": str(root), "secret": "s", "multi_tenant": True}]))
    assert main(["warm", "--config", str(config), "--library", "m", "--space", "a", "--sizes", "32",
                 "--quiet"]) == 0
    assert "rendered 1, skipped 0 (already cached), failed 0" in capsys.readouterr().out
