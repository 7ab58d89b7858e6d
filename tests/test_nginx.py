"""Production shape: real nginx from ``preview-proxy nginx-conf`` in front of real service processes.

nginx answers assets and originals from disk (its ``Server`` header, and the proxies never see the
request), checks signed links itself, rewrites mounts, and carries on when one node is killed.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import pyvips
from conftest import ROOT, config_raw, free_port, write_config, write_media
from nginx_helpers import CHROMIUM, NGINX, Nginx, Service, chromium, get

from proxy.access import sign
from proxy.config import load_config

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
SECRET = "nginx-test-secret"
ARTIFACTS = ROOT / "test-artifacts"


def stack_config(root: Path, media: Path) -> Path:
    return write_config(root / "config.toml", config_raw(
        root, media, cache={"sign_secret": SECRET},
        libraries=[{"id": "lib", "origin": str(media), "mount": "/media/", "secret": "lib-secret"},
                   {"id": "priv", "origin": str(media), "secret": "priv-secret", "public_read": False}]))


class Stack:
    def __init__(self, root: Path, nodes: int) -> None:
        self.media = write_media(root / "media")
        (self.media / "escape.jpg").symlink_to(root / "outside.jpg")
        (root / "outside.jpg").write_bytes((self.media / "landscape.jpg").read_bytes())
        self.config_path = stack_config(root, self.media)
        self.nodes = [Service(self.config_path) for _ in range(nodes)]
        self.nginx = Nginx(root / "nginx", free_port())
        self.cache = root / "cache"

    def __enter__(self) -> Stack:
        for node in self.nodes:
            node.start()
        self.nginx.start(load_config(self.config_path), [f"127.0.0.1:{n.port}" for n in self.nodes])
        return self

    def __exit__(self, *exc: object) -> None:
        self.nginx.stop()
        for node in self.nodes:
            node.stop(signal.SIGKILL)

    def get(self, path: str, method: str = "GET", headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        return get(self.nginx.port, path, method, headers)

    def proxied_asset_requests(self) -> float:
        """How many asset requests reached any proxy (from their own /metrics)."""
        total = 0.0
        for node in self.nodes:
            if node.proc and node.proc.poll() is None:
                text = get(node.port, "/metrics")[2].decode()
                pattern = r'preview_requests_total\{route="([^"]*)",status="\d+"\} ([\d.]+)'
                for m in re.finditer(pattern, text):
                    if m.group(1).startswith(("/_assets/", "/media/")):
                        total += float(m.group(2))
        return total


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("prod"), nodes=2) as s:
        yield s


def preview_via_nginx(stack: Stack, path: str) -> tuple[pyvips.Image, dict[str, str]]:
    status, headers, body = stack.get(path)
    assert status == 302, (status, body[:200])
    status, asset_headers, data = stack.get(headers["location"])
    assert status == 200
    return pyvips.Image.new_from_buffer(data, ""), asset_headers


def test_the_api_through_nginx(stack: Stack) -> None:
    image, _ = preview_via_nginx(stack, "/api/v1/file/lib/-/landscape.jpg?preview&size=90")
    assert (image.width, image.height) == (90, 90)
    image, _ = preview_via_nginx(stack, "/api/v1/file/lib/-/portrait.jpg?preview&width_size=120")
    assert (image.width, image.height) == (120, 200)
    status, headers, body = stack.get("/api/v1/file/lib/-/nope.jpg?preview")
    assert status == 404 and json.loads(body)["code"] == "FileNotFound"
    assert headers["content-type"].startswith("application/json")
    status, headers, body = stack.get("/api/v1/file/lib/-/landscape.jpg?preview&size=90", "HEAD")
    assert status == 302 and "location" in headers and body == b""


def test_assets_are_answered_by_nginx_from_disk(stack: Stack) -> None:
    status, headers, _ = stack.get("/api/v1/file/lib/-/landscape.jpg?preview&size=64")
    assert status == 302
    before = stack.proxied_asset_requests()
    status, asset, _ = stack.get(headers["location"])
    assert status == 200 and asset["server"].startswith("nginx")
    assert asset["cache-control"] == "public, max-age=31536000, immutable"
    assert asset["content-type"] == "image/jpeg" and "etag" in asset
    status, _, body = stack.get(headers["location"], headers={"If-None-Match": asset["etag"]})
    assert status == 304 and body == b""
    status, _, body = stack.get(headers["location"], "HEAD")
    assert status == 200 and body == b""
    assert stack.proxied_asset_requests() == before  # the proxies never saw the asset requests
    status, _, _ = stack.get(headers["location"], "POST")
    assert status in (403, 405)


def test_mount_rewrites_previews_and_passes_originals(stack: Stack) -> None:
    image, _ = preview_via_nginx(stack, "/media/landscape.jpg?preview&size=70")
    assert (image.width, image.height) == (70, 70)
    image, _ = preview_via_nginx(stack, "/media/%E7%9B%B8%E5%86%8C%20%E4%B8%80/%E7%85%A7%E7%89%87%201.jpg"
                                        "?size=40&preview")
    assert (image.width, image.height) == (40, 40)
    before = stack.proxied_asset_requests()
    status, headers, body = stack.get("/media/landscape.jpg")
    assert status == 200 and headers["server"].startswith("nginx")
    assert body == (stack.media / "landscape.jpg").read_bytes()
    assert stack.proxied_asset_requests() == before
    assert stack.get("/media/escape.jpg")[0] in (403, 404)  # a symlink out of the folder


def test_download_links_are_served_by_nginx(stack: Stack) -> None:
    status, headers, _ = stack.get("/api/v1/file/lib/-/doc.pdf?preview&size=10")
    assert status == 302
    status, asset, body = stack.get(headers["location"])
    assert status == 200 and body == (stack.media / "doc.pdf").read_bytes()
    assert asset["server"].startswith("nginx") and asset["content-type"] == "application/pdf"
    assert stack.get("/_assets/o/lib/-/escape.jpg")[0] in (403, 404)
    assert stack.get("/_assets/o/lib/-/../../etc/passwd")[0] in (400, 403, 404)
    assert stack.get("/_assets/o/priv/-/landscape.jpg")[0] == 403  # private: unsigned refused


def test_signed_links_are_checked_by_nginx(stack: Stack) -> None:
    rel = "p/ab/cd/abcd" + "0" * 36 + ".jpeg"
    target = stack.cache / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((stack.media / "tiny.jpg").read_bytes())
    uri = "/_assets/" + rel
    expires = int(time.time()) + 600
    good = sign(uri, expires, SECRET)
    status, headers, body = stack.get(f"{uri}?md5={good}&expires={expires}")
    assert status == 200 and body == target.read_bytes() and headers["server"].startswith("nginx")
    # kept by the browser until the link expires, not longer (API section 4), as the embedded server says
    max_age = int(headers["cache-control"].removeprefix("private, max-age="))
    assert expires - time.time() - 5 <= max_age <= expires - time.time() + 1
    tampered = ("A" if good[0] != "A" else "B") + good[1:]
    assert stack.get(f"{uri}?md5={tampered}&expires={expires}")[0] == 403
    assert stack.get(f"{uri}?md5={good}&expires={expires + 60}")[0] == 403  # expiry is signed too
    past = int(time.time()) - 10
    assert stack.get(f"{uri}?md5={sign(uri, past, SECRET)}&expires={past}")[0] == 403
    assert stack.get(uri)[0] == 403


def test_request_id_passes_through(stack: Stack) -> None:
    status, headers, _ = stack.get("/api/v1/file/lib/-/landscape.jpg?preview&size=33",
                                   headers={"X-Request-Id": "req-0123456789abcdef"})
    assert status == 302 and headers["x-request-id"] == "req-0123456789abcdef"
    status, headers, _ = stack.get("/api/v1/file/lib/-/landscape.jpg?preview&size=34")
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])  # nginx's own, kept by the proxy


def test_a_killed_node_does_not_stop_the_service(tmp_path: Path) -> None:
    with Stack(tmp_path, nodes=2) as stack:
        for i in range(6):
            assert stack.get(f"/api/v1/file/lib/-/landscape.jpg?preview&size={20 + i}")[0] == 302
        victim = stack.nodes[0].proc
        assert victim is not None
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        statuses = [stack.get(f"/api/v1/file/lib/-/portrait.jpg?preview&size={40 + i}")[0] for i in range(20)]
        assert statuses == [302] * 20


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (scripts/test.sh installs it)")
def test_a_page_of_thumbnails_loads_in_a_browser(stack: Stack, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{stack.nginx.port}"
    sources = [f"{base}/api/v1/file/lib/-/{name}?preview&size=200"
               for name in ("landscape.jpg", "portrait.jpg", "astronaut.png", "pic.webp")]
    sources += [f"{base}/media/{name}?preview&size=200" for name in ("landscape.jpg", "rotated6.jpg")]
    tags = "\n".join(f'<img src="{s}" style="margin:4px">' for s in sources)
    page = tmp_path / "site"
    page.mkdir()
    (page / "index.html").write_text(f"""<!doctype html><html><body style="background:#eee">{tags}
<script>
window.addEventListener("load", () => {{
  const widths = [...document.images].map(i => i.complete ? i.naturalWidth : -1);
  document.body.setAttribute("data-widths", JSON.stringify(widths));
}});
</script></body></html>""")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(page)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    shot = ARTIFACTS / "nginx-page.png"
    try:
        dom = chromium(url, tmp_path / "profile", shot)
    finally:
        server.shutdown()
    m = re.search(r'data-widths="([^"]*)"', dom)
    assert m, dom[-500:]
    assert json.loads(m.group(1).replace("&quot;", '"')) == [200] * len(sources)
    assert shot.is_file() and shot.stat().st_size > 1000


def test_multi_tenant_originals_through_nginx(tmp_path: Path) -> None:
    """Spaces of a folder library with one private space: every original link is signed (nginx
    checks the whole library), names with a space and non-ASCII included, and nginx serves them
    with the headers that keep a user's file from running as a page."""
    from urllib.parse import quote, unquote

    media = tmp_path / "media"
    for space in ("sp1", "sp2"):
        (media / space).mkdir(parents=True)
        (media / space / "中 文.pdf").write_bytes(f"a document in {space}".encode())
    config = write_config(tmp_path / "config.toml", config_raw(
        tmp_path, media, cache={"sign_secret": SECRET},
        libraries=[{"id": "mt", "origin": str(media), "secret": "s", "multi_tenant": True,
                    "spaces": {"sp2": {"public_read": False}}}]))
    service, nginx = Service(config), Nginx(tmp_path / "nginx", free_port())
    service.start()
    try:
        nginx.start(load_config(config), [f"127.0.0.1:{service.port}"])
        name = quote("中 文.pdf")
        status, headers, _ = get(nginx.port, f"/api/v1/file/mt/sp1/{name}")
        assert status == 302 and "md5=" in headers["location"]  # the library has a private space
        status, asset, body = get(nginx.port, headers["location"])
        assert status == 200 and body == b"a document in sp1" and asset["server"].startswith("nginx")
        assert "sandbox" in asset["content-security-policy"] and asset["x-content-type-options"] == "nosniff"
        uri = f"/_assets/o/mt/sp2/{name}"
        expires = int(time.time()) + 300
        good = f"{uri}?md5={sign(unquote(uri), expires, SECRET)}&expires={expires}"
        status, _, body = get(nginx.port, good)
        assert status == 200 and body == b"a document in sp2"
        assert get(nginx.port, uri)[0] == 403
        assert get(nginx.port, f"/_assets/o/mt/{name}")[0] in (403, 404)
    finally:
        nginx.stop()
        service.stop()


def test_multi_tenant_http_origin_passes_only_paths_in_a_space(tmp_path: Path) -> None:
    """A public multi-tenant library on an http origin: nginx passes ``o/{id}/{space}/{path}`` to the
    origin, and answers 404 for what no space holds (the origin's root, ``-``, dot folders)."""
    root = tmp_path / "origin"
    (root / "sp1").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "-").mkdir()
    for name in ("sp1/a.txt", "top.txt", ".git/config", "-/x.txt"):
        (root / name).write_bytes(b"origin file " + name.encode())
    origin = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    config = write_config(tmp_path / "config.toml", config_raw(
        tmp_path, tmp_path, libraries=[{"id": "mt", "origin": f"http://127.0.0.1:{origin.server_address[1]}/",
                                        "secret": "s", "multi_tenant": True}]))
    nginx = Nginx(tmp_path / "nginx", free_port())
    try:
        nginx.start(load_config(config), [f"127.0.0.1:{free_port()}"])  # no service: nginx alone answers
        status, _, body = get(nginx.port, "/_assets/o/mt/sp1/a.txt")
        assert (status, body) == (200, b"origin file sp1/a.txt")
        for path in ("top.txt", ".git/config", "-/x.txt", "%2egit/config", "sp1/../top.txt", "sp1/"):
            assert get(nginx.port, f"/_assets/o/mt/{path}")[0] == 404, path
    finally:
        nginx.stop()
        origin.shutdown()
