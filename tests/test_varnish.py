"""Behind a real HTTP cache: Varnish with its default VCL (standing for a CDN) in front of the service,
embedded and through the generated nginx.conf. Our headers alone must make it right: a public preview
is answered by the cache, negotiated variants stay with their Accept, nothing private is shared, and
a changed photo is seen once ``redirect_max_age`` has passed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips
from conftest import config_raw, free_port, write_config, write_media
from nginx_helpers import NGINX, Nginx
from processes import Service, get
from varnish_helpers import VARNISHD, Varnish, from_cache

from proxy.config import load_config

pytestmark = pytest.mark.skipif(not (Path(VARNISHD).exists() and Path(NGINX).exists()),
                                reason="varnish or nginx is not installed")
FRONTS = ("embedded", "nginx")
API = "/api/v1/file/lib/-/"
SECRET = "varnish-test-secret"
IMMUTABLE = "public, max-age=31536000, immutable"
AVIF_CLIENT = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
WEBP_CLIENT = "image/webp,image/png,image/*;q=0.8,*/*;q=0.5"


class Front:
    """Varnish -> (nginx ->) the service, on one config."""

    def __init__(self, root: Path, kind: str, **sections: Any) -> None:
        self.media = write_media(root / "media")
        self.config_path = write_config(root / "config.toml", config_raw(
            root, self.media, **{"cache": {"sign_secret": SECRET}, "output": {"negotiate": ["avif", "webp"]},
                                 **sections},
            libraries=[{"id": "lib", "origin": str(self.media), "secret": "lib-secret"},
                       {"id": "priv", "origin": str(self.media), "secret": "priv-secret",
                        "public_read": False}]))
        self.service = Service(self.config_path)
        self.nginx = Nginx(root / "nginx", free_port()) if kind == "nginx" else None
        backend = self.nginx.port if self.nginx else self.service.port
        self.varnish = Varnish(root / "varnish", free_port(), backend)

    def __enter__(self) -> Front:
        self.service.start()
        if self.nginx:
            self.nginx.start(load_config(self.config_path), [f"127.0.0.1:{self.service.port}"])
        self.varnish.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.varnish.stop()
        if self.nginx:
            self.nginx.stop()
        self.service.stop()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """Through the cache, as a client of the CDN."""
        return self.varnish.get(path, headers=headers)

    def service_requests(self) -> float:
        """File API requests that reached the service (its own /metrics, asked directly)."""
        text = self.service.get("/metrics")[2].decode()
        return sum(float(m.group(2)) for m in re.finditer(
            r'preview_requests_total\{route="([^"]*)",status="\d+"\} ([\d.]+)', text)
            if m.group(1).startswith("/api/v1/file"))

    def token(self, library: str) -> str:
        body = self.service.get(f"/api/v1/token?library_id={library}&library_secret={library}-secret")[2]
        return json.loads(body)["accessToken"]


@pytest.fixture(scope="module", params=FRONTS)
def front(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    with Front(tmp_path_factory.mktemp(request.param), request.param) as f:
        yield f


def test_a_repeated_preview_is_answered_by_the_cache(front: Front) -> None:
    url = API + "landscape.jpg?preview&size=61"
    before = front.service_requests()
    status, first, _ = front.get(url)
    assert status == 302 and not from_cache(first)
    status, again, _ = front.get(url)
    assert status == 302 and from_cache(again) and again["location"] == first["location"]
    assert front.service_requests() == before + 1
    status, asset, body = front.get(first["location"])
    assert status == 200 and asset["cache-control"] == IMMUTABLE
    assert pyvips.Image.new_from_buffer(body, "").width == 61
    status, asset_again, body_again = front.get(first["location"])
    assert status == 200 and from_cache(asset_again) and body_again == body
    status, _, empty = front.get(first["location"], {"If-None-Match": asset["etag"]})
    assert status == 304 and empty == b""


def test_negotiated_variants_stay_with_their_accept(front: Front) -> None:
    url = API + "portrait.jpg?preview&size=62"
    expected = {AVIF_CLIENT: "image/avif", WEBP_CLIENT: "image/webp", "*/*": "image/jpeg", "": "image/jpeg"}
    before = front.service_requests()
    locations: dict[str, str] = {}
    for round_ in range(2):  # the second round is answered by the cache, each client its own variant
        for accept, content_type in expected.items():
            status, headers, _ = front.get(url, {"Accept": accept} if accept else {})
            assert status == 302 and headers["vary"] == "Accept"
            assert from_cache(headers) == (round_ == 1), accept
            assert locations.setdefault(accept, headers["location"]) == headers["location"]
            status, asset, body = front.get(headers["location"], {"Accept": accept} if accept else {})
            assert status == 200 and asset["content-type"] == content_type, accept
            assert pyvips.Image.new_from_buffer(body, "").width == 62
    assert len(set(locations.values())) == 3  # "*/*" and no Accept: one JPEG
    assert front.service_requests() == before + len(expected)


def test_token_302s_and_private_assets_are_never_shared(front: Front) -> None:
    token = front.token("priv")
    url = "/api/v1/file/priv/-/landscape.jpg?preview&size=63"
    before = front.service_requests()
    for _ in range(2):
        status, headers, _ = front.get(f"{url}&access_token={token}")
        assert status == 302 and headers["cache-control"] == "private, no-store" and not from_cache(headers)
    assert front.service_requests() == before + 2
    status, headers, _ = front.get(url, {"Authorization": f"Bearer {token}"})
    assert status == 302 and not from_cache(headers)
    status, _, body = front.get(url)  # the next client, without a token: not the 302 above
    assert status == 400 and json.loads(body)["code"] == "EmptyAccessToken"
    for _ in range(2):
        status, asset, _ = front.get(headers["location"])
        assert status == 200 and asset["cache-control"].startswith("private, max-age=")
        assert not from_cache(asset)
    assert front.get(headers["location"].partition("?")[0])[0] == 403  # unsigned: nothing cached to give


def test_an_error_is_not_kept_for_the_next_client(front: Front) -> None:
    url = API + "late.jpg?preview&size=20"
    status, headers, _ = front.get(url)
    assert status == 404 and headers["cache-control"] == "no-store"
    (front.media / "late.jpg").write_bytes((front.media / "tiny.jpg").read_bytes())
    status, headers, _ = front.get(url)
    assert status == 302 and not from_cache(headers)


def solid(path: Path, rgb: list[int]) -> None:
    (pyvips.Image.black(120, 90, bands=3) + rgb).cast("uchar").jpegsave(str(path), Q=95)


def colour(front: Front, location: str) -> list[float]:
    status, _, body = front.get(location)
    assert status == 200
    image = pyvips.Image.new_from_buffer(body, "")
    return [image.extract_band(b).avg() for b in range(3)]


@pytest.mark.parametrize("kind", FRONTS)
def test_no_stale_image_once_redirect_max_age_has_passed(tmp_path: Path, kind: str) -> None:
    with Front(tmp_path, kind, server={"redirect_max_age": 2}, cache={"sign_secret": SECRET, "version_ttl": 1}
               ) as front:
        url = API + "swatch.jpg?preview&size=40"
        solid(front.media / "swatch.jpg", [200, 20, 20])
        status, old, _ = front.get(url)
        assert status == 302 and from_cache(front.get(url)[1])  # the cache holds the old 302
        assert colour(front, old["location"])[0] > 150
        solid(front.media / "swatch.jpg", [20, 20, 200])
        later = time.time() + 5  # a new mtime even on a coarse file system
        os.utime(front.media / "swatch.jpg", (later, later))
        subprocess.run([sys.executable, "-m", "proxy", "cache", "purge", "--config", str(front.config_path),
                        "--library", "lib"], check=True, capture_output=True)
        time.sleep(2 + 1 + 0.5)  # redirect_max_age (the cache's copy), then version_ttl (the service's)
        status, new, _ = front.get(url)
        assert status == 302 and new["location"] != old["location"]
        red, _, blue = colour(front, new["location"])
        assert blue > 150 and red < 60
        assert get(front.service.port, "/healthz")[0] == 200
