"""The gallery a newcomer opens at ``/``: every thumbnail loads in a real browser."""

from __future__ import annotations

import json
import re
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT, config_raw, write_config, write_media
from nginx_helpers import CHROMIUM, Service, chromium, get


def _config(tmp_path: Path, gallery: bool) -> Path:
    media = write_media(tmp_path / "media")
    return write_config(tmp_path / "config.toml", config_raw(
        tmp_path, media, server={"gallery": gallery}, faces={"detector": "auto", "debug": True},
        libraries=[{"id": "demo", "origin": str(media), "secret": "s"}]))


def test_gallery_is_off_unless_configured(tmp_path: Path) -> None:
    service = Service(_config(tmp_path, gallery=False))
    service.start()
    try:
        status, _, body = get(service.port, "/")
        assert status == 404 and json.loads(body)["code"] == "RouteNotFound"
    finally:
        service.stop()


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (scripts/test.sh installs it)")
def test_every_gallery_image_loads_in_chromium(tmp_path: Path) -> None:
    service = Service(_config(tmp_path, gallery=True))
    service.start()
    try:
        status, headers, body = get(service.port, "/?size=100")
        assert status == 200 and headers["content-type"].startswith("text/html")
        page = body.decode()
        assert "debug=faces" in page and "astronaut.png?preview&amp;size=100" in page
        dom = chromium(f"http://127.0.0.1:{service.port}/?size=100", tmp_path / "profile",
                       ROOT / "test-artifacts" / "gallery.png", size="1400,2200")
        assert dom.count("<img") == page.count("<img") >= 10
        widths = _widths(tmp_path, page, service.port)
    finally:
        service.stop()
    assert len(widths) == page.count("<img")
    # broken.jpg is a tile too (its preview is a 415 and shows nothing): every other tile loads
    assert {alt: w for alt, w in widths.items() if w == 0} == {"broken.jpg": 0}


def _widths(tmp_path: Path, page: str, port: int) -> dict[str, int]:
    """naturalWidth of every image: the gallery's own HTML with a probe script added, served by the
    test, its images still from the service (the product's page carries no test code)."""
    probe = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-widths', "
             "JSON.stringify([...document.images].map(i => [i.alt, i.naturalWidth]))));</script>")
    page = page.replace('src="/api/', f'src="http://127.0.0.1:{port}/api/').replace('loading="lazy" ', "")
    (tmp_path / "probe.html").write_text(page.replace("</body>", probe + "</body>"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dom = chromium(f"http://127.0.0.1:{server.server_address[1]}/probe.html", tmp_path / "profile2")
    finally:
        server.shutdown()
    m = re.search(r'data-widths="([^"]*)"', dom)
    assert m, dom[-300:]
    return dict(json.loads(m.group(1).replace("&quot;", '"')))
