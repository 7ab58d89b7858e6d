"""nginx/nginx.conf.example is exactly what ``nginx-conf`` makes of nginx/example.toml, and nginx
accepts it: the template in the repo cannot drift from the generator."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from nginx_helpers import NGINX

from proxy.config import build_config
from proxy.nginx import render_nginx_conf

UPSTREAMS = ["127.0.0.1:8080", "127.0.0.1:8081"]


def generated(tmp_path: Path) -> str:
    """Generate from example.toml with its /srv folders stood in by temporary ones, then put the
    /srv names back (the config check wants the folders to exist)."""
    text = (ROOT / "nginx" / "example.toml").read_text()
    srv = tmp_path / "srv"
    for sub in ("preview-proxy/cache", "photos"):
        (srv / sub).mkdir(parents=True)
    raw = tomllib.loads(text.replace("/srv/", f"{srv}/"))
    conf = render_nginx_conf(build_config(raw, source="nginx/example.toml"), "0.0.0.0:80", UPSTREAMS)
    return conf.replace(f"{srv.resolve()}/", "/srv/")


def test_the_example_is_what_the_generator_makes(tmp_path: Path) -> None:
    assert (ROOT / "nginx" / "nginx.conf.example").read_text() == generated(tmp_path)


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
def test_nginx_accepts_the_example(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    conf = tmp_path / "nginx.conf"
    # no DNS here: the example's bucket host becomes a loopback address for the syntax check
    conf.write_text(generated(tmp_path).replace("listen 0.0.0.0:80", "listen 127.0.0.1:1")
                    .replace("bucket.example.com", "127.0.0.1:9"))
    result = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_signed_assets_without_the_perl_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without nginx's perl module there is nothing to count the seconds left with: browsers
    revalidate signed assets instead of keeping them (never past the link's expiry)."""
    import proxy.nginx

    with_perl = generated(tmp_path / "a")
    monkeypatch.setattr(proxy.nginx, "PERL_MODULES", ())
    without = generated(tmp_path / "b")
    assert "load_module" in with_perl and "$preview_private_max_age" in with_perl
    assert "load_module" not in without and "perl_set" not in without
    assert 'add_header Cache-Control "private, no-cache" always;' in without
