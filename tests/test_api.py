"""The API end to end through the real app (``aiohttp_client(create_app(cfg))``) on a real folder.

Renders are checked by format, size and pixel statistics against references made here with pyvips
from the same originals, never against bytes the code under test produced.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import pyvips
from aiohttp.test_utils import TestClient
from conftest import CORPUS, ConfigFactory, asset_file, follow, gradient, needs_corpus, preview, renders
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import create_app

API = "/api/v1/file/lib/-/"


# ---- helpers ------------------------------------------------------------------------------------------


def reference(path: Path, width: int, height: int) -> pyvips.Image:
    """What a correct render looks like: pyvips' own upright, sRGB thumbnail of the original."""
    image = pyvips.Image.thumbnail(str(path), width, height=height, size="force")
    if image.interpretation != "srgb":
        image = image.colourspace("srgb")
    return image.copy_memory()


def difference(a: pyvips.Image, b: pyvips.Image) -> float:
    """Mean absolute difference per pixel and band (0..255) of two same-sized images."""
    assert (a.width, a.height) == (b.width, b.height)
    a, b = a.extract_band(0, n=3), b.extract_band(0, n=3)
    return float((a.cast("float") - b.cast("float")).abs().avg())


def content_type(image: pyvips.Image) -> str:
    return image.get("test-content-type")


async def raw_request(client: TestClient, target: str, method: str = "GET",
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send ``target`` byte for byte (no client-side normalisation of '..' or '%2e')."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {client.server.host}", "Connection: close",
             *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape"))
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, body


async def assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, (resp.status, await resp.text())
    assert resp.headers["Content-Type"].startswith("application/json")
    body = json.loads(await resp.read())
    assert set(body) == {"code", "message", "requestId"}
    assert body["code"] == code and body["message"]
    assert body["requestId"] == resp.headers["X-Request-Id"]
    assert "Traceback" not in body["message"]
    assert resp.headers["Cache-Control"] == "no-store"  # an answer for now: never kept by a CDN
    return body


def assert_raw_error(status: int, headers: dict[str, str], body: bytes, want: int, code: str) -> None:
    assert status == want, (status, body)
    parsed = json.loads(body)
    assert parsed["code"] == code and parsed["requestId"] == headers["x-request-id"]


async def metric(client: TestClient, name: str, **labels: str) -> float:
    resp = await client.get("/metrics")
    assert resp.status == 200
    total = 0.0
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def location(client: TestClient, url: str) -> str:
    resp = await client.get(url, allow_redirects=False)
    assert resp.status == 302, (resp.status, await resp.text())
    return resp.headers["Location"]


# ---- sizing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "query", "size"), [
    ("landscape.jpg", "size=200", (200, 200)),
    ("portrait.jpg", "size=200", (200, 200)),
    ("landscape.jpg", "scale=50", (320, 214)),
    ("portrait.jpg", "scale=10", (30, 50)),
    ("landscape.jpg", "width_size=320", (320, 214)),
    ("landscape.jpg", "height_size=100", (150, 100)),
    ("portrait.jpg", "width_size=100", (100, 167)),
    ("landscape.jpg", "width_size=100&height_size=100", (100, 67)),
    ("portrait.jpg", "width_size=100&height_size=100", (60, 100)),
    ("landscape.jpg", "", (640, 427)),
    # precedence: size > scale > width/height; the others are ignored, even when invalid
    ("landscape.jpg", "size=100&scale=50&width_size=10", (100, 100)),
    ("landscape.jpg", "scale=50&width_size=10&height_size=10", (320, 214)),
    ("landscape.jpg", "size=100&scale=0&width_size=abc", (100, 100)),
    # never upscale
    ("tiny.jpg", "size=400", (60, 60)),
    ("tiny.jpg", "width_size=800", (80, 60)),
    ("tiny.jpg", "width_size=800&height_size=600", (80, 60)),
    ("tiny.jpg", "scale=100", (80, 60)),
])
async def test_sizing(client: TestClient, media: Path, name: str, query: str, size: tuple[int, int]) -> None:
    image = await preview(client, name, query)
    assert (image.width, image.height) == size
    assert image.get("vips-loader").startswith("jpegload") and content_type(image) == "image/jpeg"
    if not re.search(r"(^|&)size=", query):                     # a whole picture, resized
        assert difference(image, reference(media / name, *size)) < 4


@pytest.mark.parametrize(("name", "cover"), [("landscape.jpg", (300, 200)), ("portrait.jpg", (200, 333))])
async def test_size_crops_at_the_centre(client: TestClient, media: Path, name: str,
                                        cover: tuple[int, int]) -> None:
    image = await preview(client, name, "size=200")
    big = reference(media / name, *cover)
    centre = big.crop((cover[0] - 200) // 2, (cover[1] - 200) // 2, 200, 200)
    assert difference(image, centre) < 4
    off = big.crop(0, 0, 200, 200)                # the top-left corner would be a different picture
    assert difference(image, off) > 3 * difference(image, centre) + 4


async def test_exif_orientation_is_applied(client: TestClient, media: Path) -> None:
    image = await preview(client, "rotated6.jpg", "width_size=120")
    assert (image.width, image.height) == (120, 200)              # stored 400x240, displayed 240x400
    assert "orientation" not in image.get_fields() or image.get("orientation") == 1
    assert difference(image, reference(media / "rotated6.jpg", 120, 200)) < 4
    stored = pyvips.Image.thumbnail(str(media / "rotated6.jpg"), 120, height=200, size="force",
                                    no_rotate=True).copy_memory()
    assert difference(image, stored) > 20                          # not the picture as stored
    square = await preview(client, "rotated6.jpg", "size=100")
    assert (square.width, square.height) == (100, 100)


@needs_corpus()
async def test_corpus_exif_orientations(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    folder = CORPUS / "exif"
    cfg = make_config(libraries=[{"id": "lib", "origin": str(folder), "secret": "s"}])
    client = await aiohttp_client(create_app(cfg))
    upright = await preview(client, "recurser_Landscape_1.jpg", "width_size=180")
    assert (upright.width, upright.height) == (180, 120)
    for n in range(2, 9):
        image = await preview(client, f"recurser_Landscape_{n}.jpg", "width_size=180")
        assert (image.width, image.height) == (180, 120), n
        assert difference(image, upright) < 12, n                  # the same picture, the same way up
    hopper = [await preview(client, f"pillow_hopper_orientation_{n}.jpg", "size=64") for n in range(2, 9)]
    for image in hopper[1:]:
        assert difference(image, hopper[0]) < 16


async def test_alpha_png_keeps_its_alpha(client: TestClient) -> None:
    image = await preview(client, "alpha.png", "width_size=100")
    assert (image.width, image.height) == (100, 60)
    assert content_type(image) == "image/png" and image.get("vips-loader").startswith("pngload")
    assert image.bands == 4 and image.hasalpha()
    assert abs(image.extract_band(3).avg() - 160) < 2


async def test_metadata_is_stripped(client: TestClient, media: Path) -> None:
    source = pyvips.Image.new_from_file(str(media / "rotated6.jpg"))
    assert "exif-data" in source.get_fields()
    image = await preview(client, "rotated6.jpg", "width_size=100")
    fields = image.get_fields()
    assert not [f for f in fields if f.startswith(("exif", "xmp", "iptc", "icc"))], fields


@needs_corpus()
async def test_corpus_gps_metadata_is_stripped(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    cfg = make_config(libraries=[{"id": "lib", "origin": str(CORPUS / "faces"), "secret": "s"}])
    client = await aiohttp_client(create_app(cfg))
    image = await preview(client, "noface_imageio_rommel.jpg", "width_size=300")
    assert (image.width, image.height) == (300, 400)               # EXIF orientation 6
    assert not [f for f in image.get_fields() if f.startswith(("exif", "xmp", "iptc", "icc"))]


@needs_corpus()
async def test_corpus_cmyk_becomes_srgb(aiohttp_client: Any, make_config: ConfigFactory,
                                        tmp_path: Path) -> None:
    folder = tmp_path / "formats"
    folder.mkdir()
    shutil.copy(CORPUS / "formats" / "thumbor_Giunchedi-cmyk.jpg", folder / "cmyk.jpg")
    shutil.copy(CORPUS / "faces" / "thumbor_Giunchedi_Filippo_2015.jpg", folder / "rgb.jpg")
    shutil.copy(CORPUS / "formats" / "pillow_pil_sample_cmyk.jpg", folder / "small-cmyk.jpg")
    shutil.copy(CORPUS / "formats" / "thumbor_gradient_msb_16bperchannel.tif", folder / "deep.tif")
    cfg = make_config(libraries=[{"id": "lib", "origin": str(folder), "secret": "s"}])
    client = await aiohttp_client(create_app(cfg))
    cmyk = await preview(client, "cmyk.jpg", "width_size=200")
    rgb = await preview(client, "rgb.jpg", "width_size=200")
    assert cmyk.bands == 3 and cmyk.interpretation == "srgb" and content_type(cmyk) == "image/jpeg"
    assert difference(cmyk, reference(folder / "cmyk.jpg", 200, 133)) < 4
    # ImageMagick's profile-less CMYK is not exact, but it is the picture, not its negative
    assert difference(cmyk, rgb) < 0.5 * difference(cmyk, rgb.invert())
    small = await preview(client, "small-cmyk.jpg")
    assert (small.width, small.height, small.bands) == (100, 100, 3)
    deep = await preview(client, "deep.tif", "width_size=50")
    assert (deep.width, deep.height, deep.bands) == (50, 50, 3) and content_type(deep) == "image/jpeg"
    assert deep.format == "uchar" and 20 < deep.avg() < 235


# ---- output formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "query", "loader", "ctype"), [
    ("landscape.jpg", "", "jpegload", "image/jpeg"),
    ("alpha.png", "", "pngload", "image/png"),
    ("pic.webp", "", "webpload", "image/webp"),
    ("still.gif", "", "gifload", "image/gif"),
    ("landscape.jpg", "format=webp", "webpload", "image/webp"),
    ("landscape.jpg", "format=png", "pngload", "image/png"),
    ("alpha.png", "format=jpeg", "jpegload", "image/jpeg"),
    ("alpha.png", "format=jpg", "jpegload", "image/jpeg"),
    ("pic.webp", "format=gif", "gifload", "image/gif"),
    ("landscape.jpg", "format=avif", "heifload", "image/avif"),
])
async def test_output_format(client: TestClient, name: str, query: str, loader: str, ctype: str) -> None:
    image = await preview(client, name, "width_size=64&" + query if query else "width_size=64")
    assert image.get("vips-loader").startswith(loader)
    assert content_type(image) == ctype and image.width == 64


async def test_alpha_flattened_for_jpeg(client: TestClient) -> None:
    image = await preview(client, "alpha.png", "format=jpeg")
    assert image.bands == 3 and (image.width, image.height) == (200, 120)


@needs_corpus()
@pytest.mark.parametrize(("name", "loader", "ctype"), [
    ("pillow_hopper.avif", "heifload", "image/avif"),
    ("pillow_hopper.heif", "jpegload", "image/jpeg"),
    ("thumbor_image.heic", "jpegload", "image/jpeg"),
    ("pillow_hopper.webp", "webpload", "image/webp"),
    ("thumbor_gradient_msb_16bperchannel.tif", "jpegload", "image/jpeg"),
])
async def test_corpus_format_families(aiohttp_client: Any, make_config: ConfigFactory, name: str,
                                      loader: str, ctype: str) -> None:
    cfg = make_config(libraries=[{"id": "lib", "origin": str(CORPUS / "formats"), "secret": "s"}])
    client = await aiohttp_client(create_app(cfg))
    image = await preview(client, name, "size=64")
    assert (image.width, image.height) == (64, 64)
    assert image.get("vips-loader").startswith(loader) and content_type(image) == ctype
    assert 10 < image.avg() < 245                                 # decoded pixels, not a blank frame


# ---- not previewable, download links, originals -----------------------------------------------------


async def test_not_previewable_redirects_to_the_download_link(client: TestClient, media: Path) -> None:
    preview_loc = await location(client, API + "doc.pdf?preview&size=200")
    download_loc = await location(client, API + "doc.pdf")
    assert preview_loc == download_loc
    status, headers, body = await follow(client, preview_loc)
    assert status == 200 and body == (media / "doc.pdf").read_bytes()
    assert headers["Content-Type"] == "application/pdf"


async def test_download_link_get_and_head(client: TestClient, media: Path) -> None:
    resp = await client.get(API + "landscape.jpg", allow_redirects=False)
    assert resp.status == 302 and await resp.read() == b""
    assert resp.headers["Cache-Control"] == "public, max-age=60, stale-while-revalidate=0"
    status, headers, body = await follow(client, resp.headers["Location"])
    assert status == 200 and body == (media / "landscape.jpg").read_bytes()
    assert headers["Content-Type"] == "image/jpeg"
    head = await client.head(API + "landscape.jpg", allow_redirects=False)
    assert head.status == 302 and head.headers["Location"] == resp.headers["Location"]
    assert head.headers["x-smh-type"] == "image"
    assert head.headers["x-smh-size"] == str((media / "landscape.jpg").stat().st_size)
    assert head.headers["x-smh-etag"]
    pdf = await client.head(API + "doc.pdf", allow_redirects=False)
    assert pdf.headers["x-smh-type"] == "file" and pdf.headers["x-smh-size"] == str(len(
        (media / "doc.pdf").read_bytes()))
    (media / "clip.mp4").write_bytes(b"\x00" * 10)
    video = await client.head(API + "clip.mp4", allow_redirects=False)
    assert video.headers["x-smh-type"] == "video"
    assert video.headers["x-smh-etag"] != head.headers["x-smh-etag"]


async def test_download_of_chinese_and_space_names(client: TestClient, media: Path) -> None:
    path = quote("相册 一/照片 1.jpg")
    loc = await location(client, API + path)
    status, _, body = await follow(client, loc)
    assert status == 200 and body == (media / "相册 一" / "照片 1.jpg").read_bytes()
    image = await preview(client, path, "size=50")
    assert (image.width, image.height) == (50, 50)
    image = await preview(client, "%E7%9B%B8%E5%86%8C%20%E4%B8%80%2F%E7%85%A7%E7%89%87%201.jpg", "size=40")
    assert (image.width, image.height) == (40, 40)                 # %2F is a separator


async def test_original_via_asset_route_refuses_traversal(client: TestClient) -> None:
    for target in ["/_assets/o/lib/-/..%2F..%2Fetc%2Fpasswd", "/_assets/o/lib/-/%2e%2e/x.jpg",
                   "/_assets/o/lib/-//etc/passwd"]:
        status, headers, body = await raw_request(client, target)
        assert_raw_error(status, headers, body, 400, "InvalidPath")
    status, headers, body = await raw_request(client, "/_assets/../../etc/passwd")
    assert status in (400, 404) and b"root:" not in body


# ---- errors -------------------------------------------------------------------------------------------


@pytest.fixture
async def wide(aiohttp_client: Any, make_config: ConfigFactory, media: Path) -> TestClient:
    """The app with a single-tenant, a multi-tenant and a private library."""
    (media / "alice").mkdir()
    shutil.copy(media / "landscape.jpg", media / "alice" / "pic.jpg")
    cfg = make_config(cache={"sign_secret": "a-long-random-sign-secret"}, libraries=[
        {"id": "lib", "origin": str(media), "secret": "s"},
        {"id": "mt", "origin": str(media), "secret": "s", "multi_tenant": True},
        {"id": "priv", "origin": str(media), "secret": "s", "public_read": False},
    ])
    return await aiohttp_client(create_app(cfg))


ERRORS = [
    ("/api/v1/file/nope/-/landscape.jpg?preview", 404, "LibraryNotFound"),
    ("/api/v1/file/nope/-/landscape.jpg", 404, "LibraryNotFound"),
    ("/api/v1/file/lib/-/missing.jpg?preview&size=10", 404, "FileNotFound"),
    ("/api/v1/file/lib/-/missing.pdf", 404, "FileNotFound"),
    ("/api/v1/file/lib/-/missing.pdf?preview", 404, "FileNotFound"),
    ("/api/v1/file/lib/-/landscape.jpg/x.jpg?preview", 404, "FileNotFound"),
    ("/api/v1/file/lib/-/%E7%9B%B8%E5%86%8C%20%E4%B8%80?preview", 404, "FileNotFound"),   # a folder
    ("/api/v1/file/lib/-/landscape.jpg?preview&size=0", 400, "InvalidParameter"),
    ("/api/v1/file/lib/-/landscape.jpg?preview&scale=101", 400, "InvalidParameter"),
    ("/api/v1/file/lib/-/landscape.jpg?preview&width_size=1.5", 400, "InvalidParameter"),
    ("/api/v1/file/lib/-/landscape.jpg?preview&frame_number=0", 400, "InvalidParameter"),
    ("/api/v1/file/lib/-/landscape.jpg?preview&format=bmp", 400, "InvalidParameter"),
    ("/api/v1/file/lib/-/landscape.jpg?preview&size=%ff", 400, "InvalidParameter"),
    ("/api/v1/file/lib/space1/landscape.jpg?preview", 400, "NotMultiSpaceLibrary"),
    ("/api/v1/file/lib/space1/landscape.jpg", 400, "NotMultiSpaceLibrary"),
    ("/api/v1/file/mt/-/pic.jpg?preview", 400, "EmptySpaceId"),
    ("/api/v1/file/mt/-/pic.jpg", 400, "EmptySpaceId"),
    ("/api/v1/file/mt/bob/pic.jpg?preview", 404, "FileNotFound"),
    ("/api/v1/file/priv/-/landscape.jpg?preview", 400, "EmptyAccessToken"),
    ("/api/v1/file/priv/-/landscape.jpg", 400, "EmptyAccessToken"),
    ("/api/v1/file/lib/-", 404, "RouteNotFound"),
    ("/api/v1/nothing", 404, "RouteNotFound"),
    ("/nothing/at/all.jpg?preview", 404, "RouteNotFound"),
    ("/_assets/00/00/0000.jpeg", 404, "FileNotFound"),
    ("/_assets/ab/cd/abcd000000000000000000000000000000000000.jpeg", 404, "FileNotFound"),
]


async def test_error_codes(wide: TestClient) -> None:
    for url, status, code in ERRORS:
        resp = await wide.get(url, allow_redirects=False)
        await assert_error(resp, status, code)
        head = await wide.head(url, allow_redirects=False)
        assert (head.status, await head.read()) == (status, b""), url
        assert head.headers["X-Request-Id"]


async def test_multi_tenant_space(wide: TestClient) -> None:
    image = await preview(wide, "pic.jpg", "size=30", library="mt", space="alice")
    assert (image.width, image.height) == (30, 30)


async def test_request_id(client: TestClient) -> None:
    resp = await client.get(API + "missing.jpg?preview", headers={"X-Request-Id": "abcdefgh-1234"})
    body = await assert_error(resp, 404, "FileNotFound")
    assert body["requestId"] == "abcdefgh-1234"
    ids = set()
    for _ in range(3):
        resp = await client.get(API + "missing.jpg?preview", headers={"X-Request-Id": "bad id\t"})
        ids.add((await assert_error(resp, 404, "FileNotFound"))["requestId"])
    assert len(ids) == 3 and "bad id\t" not in ids
    ok = await client.get(API + "landscape.jpg?preview", allow_redirects=False)
    assert re.fullmatch(r"[0-9a-f]{32}", ok.headers["X-Request-Id"])


async def test_unsupported_media_caches_nothing(client: TestClient, tmp_path: Path) -> None:
    for _ in range(2):
        await assert_error(await client.get(API + "broken.jpg?preview&size=100"), 415, "UnsupportedMedia")
    media = tmp_path / "media"
    (media / "text.png").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    data = (media / "landscape.jpg").read_bytes()
    (media / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (media / "empty.jpg").write_bytes(b"")
    (media / "header-only.gif").write_bytes(b"GIF89a" + bytes(5))
    for name in ["text.png", "truncated.jpg", "empty.jpg", "header-only.gif"]:
        await assert_error(await client.get(API + name + "?preview&size=50"), 415, "UnsupportedMedia")
        head = await client.head(API + name + "?preview")
        assert (head.status, await head.read()) == (415, b"")
    assert renders(tmp_path / "cache") == []
    loc = await location(client, API + "broken.jpg")                # the download link still works
    assert (await follow(client, loc))[0] == 200


async def test_source_too_large(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    client = await aiohttp_client(create_app(make_config(limits={"max_source_bytes": 1000})))
    await assert_error(await client.get(API + "landscape.jpg?preview&size=10"), 413, "SourceTooLarge")
    client = await aiohttp_client(create_app(make_config(limits={"max_source_pixels": 640 * 427 - 1})))
    await assert_error(await client.get(API + "landscape.jpg?preview&size=10"), 413, "SourceTooLarge")
    assert (await preview(client, "portrait.jpg", "size=10")).width == 10


# ---- traversal through HTTP ---------------------------------------------------------------------------


TRAVERSALS = [
    "../../../etc/passwd", "..%2F..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "a/../../etc/passwd", "./landscape.jpg", "a/./landscape.jpg",
    "%2e/landscape.jpg", "/etc/passwd", "%2Fetc%2Fpasswd", "a//landscape.jpg",
    "landscape.jpg%00.png", "..%5C..%5Cetc%5Cpasswd", "a%5Clandscape.jpg", "%ff%fe.jpg", "..",
]


@pytest.mark.parametrize("query", ["?preview&size=100", "", "?preview"])
async def test_traversal_is_refused(client: TestClient, query: str) -> None:
    for path in TRAVERSALS:
        status, headers, body = await raw_request(client, API + path + query)
        assert_raw_error(status, headers, body, 400, "InvalidPath")
        status, headers, body = await raw_request(client, API + path + query, method="HEAD")
        assert (status, body) == (400, b""), path


async def test_traversal_with_a_raw_backslash(client: TestClient) -> None:
    status, _headers, body = await raw_request(client, API + "a\\..\\..\\etc\\passwd?preview")
    assert status == 400 and b"root:" not in body


async def test_symlinks(client: TestClient, media: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    gradient(50, 50).jpegsave(str(outside / "secret.jpg"))
    (outside / "secret.pdf").write_bytes(b"%PDF secret")
    os.symlink(outside / "secret.jpg", media / "link.jpg")
    os.symlink(outside, media / "linkdir")
    os.symlink(media / "landscape.jpg", media / "inside.jpg")
    for path in ["link.jpg", "linkdir/secret.jpg", "linkdir/secret.pdf"]:
        for query in ["?preview&size=20", "", "?preview"]:
            resp = await client.get(API + path + query, allow_redirects=False)
            await assert_error(resp, 404, "FileNotFound")
    status, _headers, body = await raw_request(client, "/_assets/o/lib/-/linkdir/secret.pdf")
    assert status == 404 and b"secret" not in body
    image = await preview(client, "inside.jpg", "size=20")
    assert (image.width, image.height) == (20, 20)


# ---- mounts -------------------------------------------------------------------------------------------


async def test_mount(aiohttp_client: Any, make_config: ConfigFactory, media: Path) -> None:
    cfg = make_config(libraries=[{"id": "lib", "origin": str(media), "secret": "s", "mount": "/media/"}])
    client = await aiohttp_client(create_app(cfg))
    loc = await location(client, "/media/landscape.jpg?preview&size=200")
    assert loc == await location(client, API + "landscape.jpg?preview&size=200")
    status, _, body = await follow(client, loc)
    image = pyvips.Image.new_from_buffer(body, "")
    assert status == 200 and (image.width, image.height) == (200, 200)
    resp = await client.get("/media/landscape.jpg")
    assert resp.status == 200 and await resp.read() == (media / "landscape.jpg").read_bytes()
    assert resp.headers["Content-Type"] == "image/jpeg"
    nested = await client.get("/media/" + quote("相册 一/照片 1.jpg"))
    assert nested.status == 200 and await nested.read() == (media / "相册 一" / "照片 1.jpg").read_bytes()
    image = await preview(client, quote("相册 一/照片 1.jpg"), "width_size=64")
    assert image.width == 64
    await assert_error(await client.get("/media/missing.jpg"), 404, "FileNotFound")
    await assert_error(await client.get("/media/missing.jpg?preview"), 404, "FileNotFound")
    await assert_error(await client.get("/media/landscape.jpg?preview&size=0"), 400, "InvalidParameter")
    for target in ["/media/../../etc/passwd", "/media/..%2F..%2Fetc%2Fpasswd", "/media/%2e%2e/x.jpg?preview"]:
        status, _headers, body = await raw_request(client, target)
        assert status == 400 and b"root:" not in body


# ---- caching headers, single render, versions -----------------------------------------------------


async def test_redirect_cache_control(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    client = await aiohttp_client(create_app(make_config(server={"redirect_max_age": 123})))
    resp = await client.get(API + "landscape.jpg?preview&size=10", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Cache-Control"] == "public, max-age=123, stale-while-revalidate=0"
    assert await resp.read() == b""
    assert urlsplit(resp.headers["Location"]).path.startswith("/_assets/")
    head = await client.head(API + "landscape.jpg?preview&size=10", allow_redirects=False)
    assert head.status == 302 and head.headers["Location"] == resp.headers["Location"]


async def test_public_url_makes_absolute_locations(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    client = await aiohttp_client(create_app(make_config(server={"public_url": "https://img.example.com"})))
    loc = await location(client, API + "landscape.jpg?preview&size=10")
    assert loc.startswith("https://img.example.com/_assets/")
    status, _, body = await follow(client, loc)
    assert status == 200 and pyvips.Image.new_from_buffer(body, "").width == 10


async def test_asset_headers_and_304(client: TestClient) -> None:
    loc = await location(client, API + "landscape.jpg?preview&size=50")
    resp = await client.get(loc)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert resp.headers["Content-Type"] == "image/jpeg"
    etag = resp.headers["ETag"]
    again = await client.get(loc, headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    head = await client.head(loc)
    assert head.status == 200 and head.headers["Content-Length"] == str(len(await resp.read()))


async def test_a_render_deleted_behind_the_service_is_made_again(client: TestClient) -> None:
    from proxy.keys import CACHE

    loc = await location(client, API + "landscape.jpg?preview&size=40")
    first = await client.get(loc)
    assert first.status == 200
    cache = client.server.app[CACHE]
    os.unlink(asset_file(cache.root, loc))  # another worker evicted it
    resp = await client.get(loc)  # the URL describes the render: made again, never a 404
    assert resp.status == 200 and resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert pyvips.Image.new_from_buffer(await resp.read(), "").width == 40
    assert asset_file(cache.root, loc).is_file()
    bare = urlsplit(loc).path.rpartition("/")[0] + ".jpeg"  # a file path with no description
    os.unlink(asset_file(cache.root, loc))
    resp = await client.get(bare)
    assert resp.status == 404 and (await resp.json())["code"] == "FileNotFound"


async def test_an_asset_url_describes_what_it_may_render(aiohttp_client: Any, make_config: ConfigFactory,
                                                        media: Path) -> None:
    """A public URL cannot be edited into a private space's render; a changed source is rendered as it
    is now, but not served as that URL's immutable image."""
    from proxy.links import Description, describe, parse_render_uri

    cfg = make_config(cache={"sign_secret": "x" * 32}, libraries=[
        {"id": "lib", "origin": str(media), "secret": "s", "multi_tenant": True,
         "spaces": {"closed": {"public_read": False}}}])
    (media / "open").mkdir()
    (media / "closed").mkdir()
    for space in ("open", "closed"):
        shutil.copyfile(media / "landscape.jpg", media / space / "a.jpg")
    client = await aiohttp_client(create_app(cfg))
    loc = urlsplit(await location(client, "/api/v1/file/lib/open/a.jpg?preview&size=30")).path
    asset = parse_render_uri(loc[len("/_assets/"):])
    assert asset is not None and asset.description is not None
    closed = describe(Description("closed", "a.jpg", asset.description.version, asset.description.options))
    edited = loc.rpartition("/")[0] + f"/{closed}.jpeg"
    os.unlink(asset_file(cfg.cache.dir, loc))
    resp = await client.get(edited)
    assert resp.status == 403 and (await resp.json())["code"] == "InvalidSignature"
    # the source changes: the old URL still answers an image, but only briefly cacheable
    gradient(50, 80).jpegsave(str(media / "open" / "a.jpg"))
    os.utime(media / "open" / "a.jpg", ns=(1, 1))
    resp = await client.get(loc)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "public, max-age=60"
    assert pyvips.Image.new_from_buffer(await resp.read(), "").width == 30


async def test_fifty_concurrent_requests_render_once(client: TestClient) -> None:
    url = API + "astronaut.png?preview&size=300"
    responses = await asyncio.gather(*(client.get(url, allow_redirects=False) for _ in range(50)))
    assert {r.status for r in responses} == {302}
    assert len({r.headers["Location"] for r in responses}) == 1
    assert await metric(client, "preview_render_seconds_count") == 1
    # none of the fifty found the render on disk: fifty misses (one render, the others waited on it)
    assert await metric(client, "preview_cache_total", result="miss") == 50
    assert await metric(client, "preview_cache_total", result="hit") == 0
    await location(client, url)
    assert await metric(client, "preview_render_seconds_count") == 1
    assert await metric(client, "preview_cache_total", result="hit") == 1  # now it is there


async def test_same_request_same_location_and_changed_source(aiohttp_client: Any, make_config: ConfigFactory,
                                                             media: Path) -> None:
    client = await aiohttp_client(create_app(make_config(cache={"version_ttl": 0.05})))
    url = API + "landscape.jpg?preview&size=100"
    first = await location(client, url)
    assert await location(client, url) == first
    assert await metric(client, "preview_render_seconds_count") == 1
    assert await location(client, API + "landscape.jpg?preview&size=100&scale=50") == first   # ignored
    assert await location(client, API + "landscape.jpg?size=100&preview=1") == first
    assert await location(client, API + "landscape.jpg?preview&size=101") != first
    old = pyvips.Image.new_from_buffer((await follow(client, first))[2], "")
    # rewrite the file with another picture of the same size
    gradient(640, 427).flip("horizontal").jpegsave(str(media / "landscape.jpg"), Q=90)
    await asyncio.sleep(0.1)
    second = await location(client, url)
    assert second != first
    new = pyvips.Image.new_from_buffer((await follow(client, second))[2], "")
    assert (new.width, new.height) == (100, 100)
    assert difference(new, old.flip("horizontal")) < 4 and difference(new, old) > 20


# ---- health and metrics ---------------------------------------------------------------------------------


async def test_healthz(client: TestClient) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}
    assert resp.headers["X-Request-Id"]


async def test_metrics(client: TestClient) -> None:
    await location(client, API + "landscape.jpg?preview&size=10")
    await location(client, API + "landscape.jpg?preview&size=10")
    await client.get(API + "missing.jpg?preview")
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    names = {s.name for f in text_string_to_metric_families(await resp.text()) for s in f.samples}
    for name in ["preview_requests_total", "preview_render_seconds_bucket", "preview_cache_total",
                 "preview_cache_bytes", "preview_origin_fetch_seconds_count", "preview_queue_depth"]:
        assert name in names, name
    assert await metric(client, "preview_cache_total", result="hit") == 1
    assert await metric(client, "preview_cache_total", result="miss") == 1
    assert await metric(client, "preview_requests_total", status="404") == 1
    for _ in range(100):  # the folder's size, as of the evictor's sweep that the write asked for
        if await metric(client, "preview_cache_bytes") > 0:
            break
        await asyncio.sleep(0.05)
    assert await metric(client, "preview_cache_bytes") > 0


async def test_wrong_method(client: TestClient) -> None:
    resp = await client.post(API + "landscape.jpg?preview")
    body = await assert_error(resp, 405, "MethodNotAllowed")
    assert "GET" in resp.headers["Allow"] and body["message"]


async def test_download_of_names_that_need_quoting(client: TestClient, media: Path) -> None:
    for name in ["a?b#c;d+e%f &g.pdf", "100%.jpg", "semi;colon=1.jpg", "é.pdf"]:
        (media / name).write_bytes(name.encode() * 10)
        loc = await location(client, API + quote(name, safe=""))
        status, _, body = await follow(client, loc)
        assert (status, body) == (200, name.encode() * 10), name
