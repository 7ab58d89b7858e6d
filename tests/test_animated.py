"""Animated GIF and WebP: frames kept with one crop box, frame_number, limits (proxy/animated.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import pyvips
from conftest import CORPUS, follow, needs_corpus

from proxy.animated import check_limits, render_animated, select_frames, stretch_delays
from proxy.app import create_app
from proxy.config import LimitsConfig, OutputConfig
from proxy.errors import SourceTooLarge
from proxy.render import Source, probe
from proxy.request import PreviewOptions
from proxy.types import Face, Fit, Sizing


def write_gif(path: Path, frames: int = 12, width: int = 120, height: int = 90, delay: int = 50,
              loop: int = 0, fmt: str = "gif") -> Path:
    """A horizontal gradient (red grows left to right) with a white square walking down it."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    pages = []
    for i in range(frames):
        rgb = np.dstack([x, np.full_like(x, 60), 255 - x]).astype(np.uint8)
        top = (height - 10) * i // max(1, frames - 1)
        rgb[top:top + 10, width // 2 - 5:width // 2 + 5] = 255
        pages.append(rgb)
    strip = pyvips.Image.new_from_array(np.vstack(pages)).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", height)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [delay] * frames)
    strip.set_type(pyvips.GValue.gint_type, "loop", loop)
    if fmt == "gif":
        strip.gifsave(str(path), keep_duplicate_frames=True)
    else:
        strip.webpsave(str(path), lossless=True)
    return path


def pages(data: bytes) -> tuple[int, int, int, list[int], int]:
    """(pages, width, page height, delays, loop) of an encoded animation."""
    try:
        image = pyvips.Image.new_from_buffer(data, "", n=-1)
    except pyvips.Error:  # a still format (JPEG, PNG) has no pages
        image = pyvips.Image.new_from_buffer(data, "")
    fields = set(image.get_fields())
    n = image.get("n-pages") if "n-pages" in fields else 1
    ph = image.get("page-height") if "page-height" in fields else image.height
    delays = list(image.get("delay")) if "delay" in fields else []
    return n, image.width, ph, delays, image.get("loop") if "loop" in fields else 0


async def asset(client, name: str, query: str) -> tuple[bytes, str]:
    resp = await client.get(f"/api/v1/file/lib/-/{name}?preview&{query}", allow_redirects=False)
    assert resp.status == 302, (resp.status, await resp.text())
    status, headers, body = await follow(client, resp.headers["Location"])
    assert status == 200
    return body, headers.get("Content-Type", "")


# ---- pure functions --------------------------------------------------------------------------------


def test_select_frames_even_first_kept() -> None:
    assert select_frames(10, 5) == [0, 2, 4, 6, 8]
    assert select_frames(7, 3) == [0, 2, 4]
    assert select_frames(10, 1) == [0]
    assert select_frames(4, 0) == [0, 1, 2, 3]
    assert select_frames(4, 100) == [0, 1, 2, 3]  # more than the source has: unchanged


@pytest.mark.parametrize("n,wanted", [(10, 3), (44, 5), (7, 6), (300, 100)])
def test_stretch_delays_keep_the_loop_length(n: int, wanted: int) -> None:
    delays = [(i * 37) % 90 + 10 for i in range(n)]
    kept = select_frames(n, wanted)
    stretched = stretch_delays(delays, kept)
    assert len(stretched) == len(kept)
    assert sum(stretched) == sum(delays)


def test_limits_from_the_header() -> None:
    from proxy.render import Probe

    info = Probe(loader="gifload", width=100, height=100, pages=50, family="gif")
    check_limits(info, LimitsConfig(max_frames=50, max_source_pixels=500_000))
    with pytest.raises(SourceTooLarge):
        check_limits(info, LimitsConfig(max_frames=49))
    with pytest.raises(SourceTooLarge):
        check_limits(info, LimitsConfig(max_source_pixels=499_999))


def test_libvips_crop_on_all_pages_collapses_the_animation(tmp_path: Path) -> None:
    """Why animated.py resizes with size=force and cuts per page: crop= loses the frames in 8.18."""
    gif = write_gif(tmp_path / "a.gif")
    cropped = pyvips.Image.thumbnail(f"{gif}[n=-1]", 60, height=60, crop="centre")
    forced = pyvips.Image.thumbnail(f"{gif}[n=-1]", 80, height=60, size="force")
    assert forced.height == 12 * 60
    if cropped.height == 12 * 60:  # a libvips that gets it right: the per-page cut is then only a cost
        pytest.skip("this libvips crops every page itself")
    assert cropped.height == 60


def test_faces_move_the_one_crop_box(tmp_path: Path) -> None:
    gif = write_gif(tmp_path / "a.gif", width=160, height=80)
    src = Source(path=str(gif))
    info = probe(src, LimitsConfig())
    opts = PreviewOptions(sizing=Sizing(Fit.SQUARE, 80), format="gif")
    left = render_animated(src, info, opts, LimitsConfig(), OutputConfig(), [Face(5, 20, 30, 30, 0.9)])
    right = render_animated(src, info, opts, LimitsConfig(), OutputConfig(), [Face(125, 20, 30, 30, 0.9)])
    red = []
    for rendered in (left, right):
        n, w, ph, _, _ = pages(rendered.data)
        assert (n, w, ph) == (12, 80, 80)
        strip = pyvips.Image.new_from_buffer(rendered.data, "", n=-1)
        # the red ramp says where the box is, and it is the same in the first and the last frame
        # columns the walking square never crosses, in either box
        first = strip.crop(30, 0, 20, 10).extract_band(0).avg()
        assert abs(first - strip.crop(30, 11 * 80, 20, 10).extract_band(0).avg()) < 8
        red.append(first)
    assert red[0] < 90 < 150 < red[1]  # source columns 30-50 against 110-130


# ---- through the app ------------------------------------------------------------------------------


async def test_stays_animated_every_frame_one_size(client, media: Path) -> None:
    write_gif(media / "anim.gif", frames=12, delay=50, loop=0)
    body, ctype = await asset(client, "anim.gif", "size=60")
    n, w, ph, delays, loop = pages(body)
    assert ctype == "image/gif"
    assert (n, w, ph) == (12, 60, 60)
    assert sum(delays) == 600 and loop == 0


async def test_box_sizing_and_loop_count_kept(client, media: Path) -> None:
    write_gif(media / "loop3.gif", frames=6, loop=3)
    body, _ = await asset(client, "loop3.gif", "width_size=60")
    n, w, ph, _, loop = pages(body)
    assert (n, w, ph, loop) == (6, 60, 45, 3)


async def test_frame_number_keeps_n_frames_and_the_loop_time(client, media: Path) -> None:
    write_gif(media / "anim.gif", frames=12, delay=50)
    body, _ = await asset(client, "anim.gif", "size=60&frame_number=4")
    n, w, ph, delays, _ = pages(body)
    assert (n, w, ph) == (4, 60, 60)
    assert abs(sum(delays) - 600) <= 60


async def test_frame_number_1_is_a_still_gif(client, media: Path) -> None:
    write_gif(media / "anim.gif")
    body, ctype = await asset(client, "anim.gif", "width_size=80&frame_number=1")
    n, w, ph, _, _ = pages(body)
    assert (n, w, ph, ctype) == (1, 80, 60, "image/gif")


async def test_frame_number_over_the_source_is_unchanged(client, media: Path) -> None:
    write_gif(media / "anim.gif", frames=5)
    body, _ = await asset(client, "anim.gif", "size=40&frame_number=50")
    assert pages(body)[:3] == (5, 40, 40)


async def test_animated_webp_stays_webp_and_ignores_frame_number(client, media: Path) -> None:
    write_gif(media / "anim.webp", frames=6, fmt="webp")
    body, ctype = await asset(client, "anim.webp", "size=50&frame_number=2")
    assert ctype == "image/webp"
    assert pages(body)[:3] == (6, 50, 50)  # API: frame_number is for GIFs only


async def test_forced_jpeg_of_an_animation_is_its_first_frame(client, media: Path) -> None:
    write_gif(media / "anim.gif")
    body, ctype = await asset(client, "anim.gif", "size=50&format=jpeg")
    assert ctype == "image/jpeg" and pages(body)[:3] == (1, 50, 50)


@pytest.mark.parametrize("limits", [{"max_frames": 11}, {"max_source_pixels": 120 * 90 * 12 - 1}])
async def test_over_the_limits_is_413(aiohttp_client, make_config, media: Path, limits: dict) -> None:
    write_gif(media / "anim.gif", frames=12)
    client = await aiohttp_client(create_app(make_config(limits=limits)))
    resp = await client.get("/api/v1/file/lib/-/anim.gif?preview&size=50", allow_redirects=False)
    assert resp.status == 413
    assert (await resp.json())["code"] == "SourceTooLarge"


async def test_http_origin_animation(aiohttp_client, make_config, http_origin, media: Path) -> None:
    write_gif(media / "anim.gif", frames=8)
    cfg = make_config(libraries=[{"id": "lib", "origin": http_origin.url, "secret": "s"}])
    client = await aiohttp_client(create_app(cfg))
    body, _ = await asset(client, "anim.gif", "size=40")
    assert pages(body)[:3] == (8, 40, 40)


# ---- the corpus ----------------------------------------------------------------------------------


def corpus_files(folder: str) -> list[str]:
    path = CORPUS / folder
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


@needs_corpus()
@pytest.mark.parametrize("name", corpus_files("animated"))
async def test_corpus_animation(client, media: Path, name: str) -> None:
    shutil.copyfile(CORPUS / "animated" / name, media / name)
    paged = {"n": -1} if name.endswith((".gif", ".webp")) else {}
    src = pyvips.Image.new_from_file(str(media / name), **paged)
    fields = set(src.get_fields())
    n = src.get("n-pages") if "n-pages" in fields else 1
    side = min(120, src.width, src.get("page-height") if "page-height" in fields else src.height)
    body, _ = await asset(client, name, "size=120")
    got = pages(body)
    assert got[1:3] == (side, side)
    if name.endswith((".gif", ".webp")):
        assert got[0] == n
    if n > 1:
        body, _ = await asset(client, name, "size=120&frame_number=5")
        got = pages(body)
        total = sum(src.get("delay")) if "delay" in fields else 0
        if name.endswith(".gif"):
            assert got[0] == min(5, n)
            assert not total or abs(sum(got[3]) - total) <= 0.1 * total + 20
