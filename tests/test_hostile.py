"""Hostile files: truncated, corrupt, empty, mislabelled, decompression bombs.

Each gets a clear 4xx (or a correct render where the file is legitimate), fast; the service stays
alive, nothing is cached for a refusal, and the process' peak RSS stays bounded. The shared corpus
(``hostile/`` and ``formats/``) is used when present; generated files of each class of fault run
from a bare clone.
"""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pyvips
from aiohttp.test_utils import TestClient
from conftest import CORPUS, ConfigFactory, follow, gradient, needs_corpus, renders

from proxy.app import create_app

PEAK_RSS_MB = 1536
BOMB_SECONDS = 0.8      # a bomb is refused from its header: well under a second
REFUSAL_SECONDS = 5.0   # any other refusal
SMALL_PIXELS = 4_000_000

# What the contract wants for the shared corpus files (limits: 100 MP; decoding fails closed).
CORPUS_WANT: dict[str, tuple[int, ...]] = {
    "thumbor_16384x16384.png": (413,), "libvips_17000x17000.avif": (413,), "thumbor_9643x10328.jpg": (302,),
    "thumbor_BlueSquare_truncated.jpg": (415,), "sharp_truncated.jpg": (415,), "sharp_truncated.png": (415,),
    "libvips_truncated.gif": (415,), "thumbor_image_invalid.jpg": (415,), "sharp_corrupt-header.jpg": (415,),
    "pillow_broken.png": (415,), "pillow_zero_width.gif": (415,), "moviepy_result_empty.webm": (415,),
    "libvips_looks-like-svg.webp": (302,), "libvips_truncated.svgz": (302,),
    "thumbor_broken-exif-tag.jpg": (302,), "pillow_invalid-exif.jpg": (302,),
}
CORPUS_BOMBS = {"thumbor_16384x16384.png", "libvips_17000x17000.avif"}


# ---- generated hostile files ------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (its one IDAT holds a single row)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x00" * 3 * min(width, 64))
    chunks = _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG with its SOF0 frame header patched to declare ``width`` x ``height``."""
    data = bytearray(gradient(64, 48).jpegsave_buffer(Q=80))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def write_hostile(folder: Path) -> dict[str, tuple[int, ...]]:
    """Write one file per class of fault into ``folder``; return what each must answer."""
    good_jpeg = gradient(600, 400).jpegsave_buffer(Q=90)
    good_png = gradient(300, 200).pngsave_buffer()
    files: dict[str, tuple[bytes, tuple[int, ...]]] = {
        "trunc-half.jpg": (good_jpeg[: len(good_jpeg) // 2], (415,)),
        "trunc-header.jpg": (good_jpeg[:300], (415,)),
        "trunc-half.png": (good_png[: len(good_png) // 2], (415,)),
        "empty.jpg": (b"", (415,)),
        "empty.png": (b"", (415,)),
        "empty.mp4": (b"", (415,)),
        "garbage.jpg": (bytes(range(256)) * 8, (415,)),
        "text.png": (b"hello, this is not a picture\n" * 10, (415,)),
        "html.gif": (b"<html><body><script>alert(1)</script></body></html>", (415,)),
        # parsers we do not serve, behind a name we do: refused by the loader allow-list
        "svg-inside.jpg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', (415,)),
        "csv-inside.png": (b"1,2,3\n4,5,6\n", (415,)),
        "matrix-inside.jpg": (b"2 2\n1 2\n3 4\n", (415,)),
        "pdf-inside.jpg": (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", (415,)),
        "zero-size.png": (png_declaring(0, 0), (415,)),
        # bombs: tiny files whose headers promise more pixels than the limit
        "bomb-declared.png": (png_declaring(30000, 30000), (413,)),
        "bomb-declared.jpg": (jpeg_declaring(60000, 60000), (413,)),
        "bomb-real.png": (pyvips.Image.black(2500, 2000).pngsave_buffer(compression=9), (413,)),
        "video-as-jpeg.mp4": (good_jpeg, (302, 415)),  # ffmpeg sniffs it as a one-frame video
        # download links: never rasterised
        "drawing.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', (302,)),
        "doc.pdf": (b"%PDF-1.4\n%%EOF\n", (302,)),
        # legitimate: a correct render
        "good.jpg": (good_jpeg, (302,)),
    }
    # distinct flat frames (gifsave merges identical ones; flat ones quantise in milliseconds)
    frames = pyvips.Image.arrayjoin([pyvips.Image.black(500, 500, bands=3) + i * 10 for i in range(20)],
                                    across=1).copy()
    frames.set_type(pyvips.GValue.gint_type, "page-height", 500)
    files["bomb-frames.gif"] = (frames.gifsave_buffer(effort=1), (413,))  # 20 x 0.25 MP: over 4 MP
    for name, (data, _want) in files.items():
        (folder / name).write_bytes(data)
    return {name: want for name, (_data, want) in files.items()}


BOMBS = {"bomb-declared.png", "bomb-declared.jpg", "bomb-real.png", "bomb-frames.gif"}


# ---- measuring ------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process' RSS (VmHWM); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


async def ask(client: TestClient, library: str, name: str, query: str = "size=128"
              ) -> tuple[int, dict[str, Any], float, str]:
    started = time.monotonic()
    resp = await client.get(f"/api/v1/file/{library}/-/{quote(name)}?preview&{query}", allow_redirects=False)
    body = await resp.read()
    elapsed = time.monotonic() - started
    payload: dict[str, Any] = {}
    if resp.status != 302:
        assert resp.headers["Content-Type"].startswith("application/json"), (name, resp.status, body[:200])
        import json

        payload = json.loads(body)
        assert set(payload) == {"code", "message", "requestId"}, payload
        assert "Traceback" not in payload["message"]
    return resp.status, payload, elapsed, resp.headers.get("Location", "")


async def alive(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200


# ---- tests ----------------------------------------------------------------------------------------


async def test_generated_hostile_files(aiohttp_client: Any, make_config: ConfigFactory, media: Path,
                                       tmp_path: Path) -> None:
    want = write_hostile(media)
    config = make_config(limits={"max_source_pixels": SMALL_PIXELS, "max_frames": 50})
    client = await aiohttp_client(create_app(config))
    measured = reset_peak_rss()
    failures = []
    rendered = 0
    for name, statuses in sorted(want.items()):
        status, payload, elapsed, location = await ask(client, "lib", name)
        rendered += status == 302 and name not in ("drawing.svg", "doc.pdf")
        limit = BOMB_SECONDS if name in BOMBS else REFUSAL_SECONDS
        if status not in statuses or elapsed > limit:
            failures.append(f"{name}: {status} {payload.get('code')} in {elapsed:.2f}s (want {statuses})")
        if status == 413:
            assert payload["code"] == "SourceTooLarge"
        if status == 415:
            assert payload["code"] == "UnsupportedMedia"
        if status == 302 and name.endswith(".jpg"):  # a render: follow it, it decodes
            got, _headers, body = await follow(client, location)
            assert got == 200 and pyvips.Image.new_from_buffer(body, "").width == 128
        await alive(client)
    assert not failures, "\n".join(failures)
    # refusals cache nothing: the renders on disk are those of the 302s
    assert len(renders(tmp_path / "cache")) == rendered
    if measured:
        assert peak_rss_mb() < PEAK_RSS_MB


async def test_refusals_are_not_cached_and_repeat(aiohttp_client: Any, make_config: ConfigFactory,
                                                 media: Path) -> None:
    """A refused file answers the same the second time (no half-image got cached the first time)."""
    jpeg, png = gradient(600, 400).jpegsave_buffer(Q=90), gradient(300, 200).pngsave_buffer()
    (media / "trunc-half.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (media / "trunc-half.png").write_bytes(png[: len(png) // 2])
    (media / "garbage.jpg").write_bytes(bytes(range(256)) * 8)
    client = await aiohttp_client(create_app(make_config()))
    for name in ("trunc-half.jpg", "trunc-half.png", "garbage.jpg"):
        first = (await ask(client, "lib", name))[0]
        second = (await ask(client, "lib", name))[0]
        assert first == second == 415


async def test_fixing_a_truncated_file_renders_it(aiohttp_client: Any, make_config: ConfigFactory,
                                                 media: Path) -> None:
    """Once the origin has the whole file (a new version), the preview renders."""
    data = gradient(400, 300).jpegsave_buffer(Q=90)
    (media / "upload.jpg").write_bytes(data[: len(data) // 2])
    client = await aiohttp_client(create_app(make_config(cache={"version_ttl": 0})))
    assert (await ask(client, "lib", "upload.jpg"))[0] == 415
    time.sleep(0.01)  # a distinct mtime: a new source version
    (media / "upload.jpg").write_bytes(data)
    assert (await ask(client, "lib", "upload.jpg"))[0] == 302


@needs_corpus()
async def test_corpus_hostile(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    folder = CORPUS / "hostile"
    config = make_config(limits={"max_source_bytes": "50MiB", "max_source_pixels": 100_000_000},
                         libraries=[{"id": "bad", "origin": str(folder), "secret": "s"}])
    client = await aiohttp_client(create_app(config))
    measured = reset_peak_rss()
    failures = []
    for path in sorted(folder.iterdir()):
        status, payload, elapsed, _ = await ask(client, "bad", path.name)
        want = CORPUS_WANT.get(path.name)
        if want is None:  # a file added later: a clear 4xx or a render, never a 5xx
            ok = status == 302 or (400 <= status < 500 and payload.get("code"))
        else:
            limit = BOMB_SECONDS if path.name in CORPUS_BOMBS else (60 if status == 302 else REFUSAL_SECONDS)
            ok = status in want and elapsed < limit
        if not ok:
            failures.append(f"{path.name}: {status} {payload.get('code')} in {elapsed:.2f}s (want {want})")
        await alive(client)
    assert not failures, "\n".join(failures)
    if measured:
        assert peak_rss_mb() < PEAK_RSS_MB


@needs_corpus()
async def test_corpus_odd_formats(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    """16-bit, CMYK, 1-bit, palette, HEIC, AVIF, Ultra HDR, TIFF, WebP render (every format the README
    lists as supported: a 415 for one of them is a lost format, not a refusal); SVG is a download link."""
    folder = CORPUS / "formats"
    config = make_config(libraries=[{"id": "fmt", "origin": str(folder), "secret": "s"}])
    client = await aiohttp_client(create_app(config))
    failures = []
    for path in sorted(folder.iterdir()):
        status, payload, _elapsed, location = await ask(client, "fmt", path.name, "size=96")
        if path.suffix == ".svg":
            ok = status == 302 and "/o/" in location
        else:
            ok = status == 302 and "/o/" not in location
            if ok:
                got, _headers, body = await follow(client, location)
                image = pyvips.Image.new_from_buffer(body, "")  # a square, never past the source
                ok = got == 200 and 0 < image.width == image.height <= 96 and image.avg() > 0
        if not ok:
            failures.append(f"{path.name}: {status} {payload}")
    await alive(client)
    assert not failures, "\n".join(failures)
    suffixes = {p.suffix.lower() for p in folder.iterdir()}
    assert suffixes >= {".jpg", ".png", ".webp", ".heic", ".heif", ".avif", ".tif"}  # each one tried


@pytest.mark.parametrize("declared", [(30000, 30000), (60000, 60000), (100_001, 1000)])
def test_bomb_header_is_refused_before_decoding(declared: tuple[int, int], tmp_path: Path) -> None:
    """The probe alone (no pixel decoded) refuses what the header declares, in milliseconds."""
    from proxy.config import LimitsConfig
    from proxy.errors import SourceTooLarge
    from proxy.render import Source, probe

    width, height = declared
    data = png_declaring(width, height) if width > 65535 else jpeg_declaring(width, height)
    started = time.monotonic()
    with pytest.raises(SourceTooLarge):
        probe(Source(data=data), LimitsConfig(max_source_pixels=50_000_000))
    assert time.monotonic() - started < 0.2
