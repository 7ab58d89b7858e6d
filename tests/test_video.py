"""Video covers: first decodable frame, display rotation, sizing and crop, broken files (proxy/video.py)."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import pyvips
from conftest import CORPUS, astronaut, needs_corpus, preview

from proxy.app import create_app
from proxy.config import LimitsConfig, OutputConfig, VideoConfig
from proxy.errors import SourceTooLarge, UnsupportedMedia
from proxy.render import Source
from proxy.request import PreviewOptions
from proxy.types import Face, Fit, Sizing
from proxy.video import cover_frame, is_near_black, local_file, render_cover, to_vips

RED, BLUE = (0, 0, 255), (255, 0, 0)  # BGR, as OpenCV writes


def write_video(path: Path, frames: list[np.ndarray], fourcc: str, fps: int = 10) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), fourcc
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def solid(width: int, height: int, bgr: tuple[int, int, int], n: int = 5) -> list[np.ndarray]:
    return [np.full((height, width, 3), bgr, np.uint8) for _ in range(n)]


def top_red(width: int, height: int, n: int = 5) -> list[np.ndarray]:
    """Red top half, blue bottom half: which way is up is visible in the output."""
    frame = np.full((height, width, 3), BLUE, np.uint8)
    frame[: height // 2] = RED
    return [frame.copy() for _ in range(n)]


def rotate_mp4(path: Path, degrees: int) -> Path:
    """Write a display matrix into the video track's tkhd, as phones do (VideoWriter cannot)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0
    version = data[at + 4]
    matrix_at = at + 4 + 4 + (32 if version == 1 else 20) + 8 + 8
    one, minus = 0x10000, -0x10000 & 0xFFFFFFFF
    abcd = {90: (0, one, minus, 0), 180: (minus, 0, 0, minus), 270: (0, minus, one, 0)}[degrees]
    struct.pack_into(">9I", data, matrix_at, abcd[0], abcd[1], 0, abcd[2], abcd[3], 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path


def rgb_at(image: pyvips.Image, x: int, y: int) -> list[float]:
    return list(image(x, y))[:3]


async def cover(client, name: str, query: str = "") -> tuple[pyvips.Image, str]:
    image = await preview(client, name, query)
    return image, image.get("test-content-type")


# ---- pure functions --------------------------------------------------------------------------------


def test_to_vips_turns_bgr_into_rgb() -> None:
    image = to_vips(np.full((4, 6, 3), RED, np.uint8))
    assert (image.width, image.height, image.interpretation) == (6, 4, "srgb")
    assert rgb_at(image, 0, 0) == [255, 0, 0]


def test_near_black() -> None:
    assert is_near_black(np.full((90, 160, 3), 6, np.uint8))
    assert not is_near_black(np.full((90, 160, 3), 90, np.uint8))


def test_local_file_is_removed_after(tmp_path: Path) -> None:
    with local_file(Source(data=b"abc"), "mp4") as path:
        assert Path(path).read_bytes() == b"abc" and path.endswith(".mp4")
    assert not os.path.exists(path)
    with pytest.raises(UnsupportedMedia), local_file(Source(data=b""), "mp4") as path:
        cover_frame(path, LimitsConfig())
    assert not os.path.exists(path)


@pytest.mark.parametrize("fourcc,ext", [("MJPG", "avi"), ("mp4v", "mp4")])
def test_first_frame_of_generated_videos(tmp_path: Path, fourcc: str, ext: str) -> None:
    video = write_video(tmp_path / f"v.{ext}", solid(64, 48, RED, 2) + solid(64, 48, BLUE, 3), fourcc)
    frame = cover_frame(str(video), LimitsConfig())
    assert frame.shape == (48, 64, 3)
    assert frame[24, 32, 2] > 200 and frame[24, 32, 0] < 60  # red: the first frame, not a later one


def test_skip_black(tmp_path: Path) -> None:
    video = write_video(tmp_path / "fade.avi", solid(64, 48, (3, 3, 3), 4) + solid(64, 48, RED, 3), "MJPG")
    assert is_near_black(cover_frame(str(video), LimitsConfig()))
    assert cover_frame(str(video), LimitsConfig(), skip_black=True)[24, 32, 2] > 200


def test_pixel_limit_before_decoding(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", solid(64, 48, RED), "MJPG")
    with pytest.raises(SourceTooLarge):
        cover_frame(str(video), LimitsConfig(max_source_pixels=64 * 48 - 1))


@pytest.mark.parametrize("data", [b"", b"\x00" * 4096, b"RIFF\x10\x00\x00\x00AVI LIST"])
def test_broken_videos_are_415(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "bad.mp4").write_bytes(data)
    with pytest.raises(UnsupportedMedia):
        cover_frame(str(tmp_path / "bad.mp4"), LimitsConfig())


def test_truncated_mp4_is_415(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", solid(64, 48, RED, 10), "mp4v")
    (tmp_path / "cut.mp4").write_bytes(video.read_bytes()[:300])
    with pytest.raises(UnsupportedMedia):
        cover_frame(str(tmp_path / "cut.mp4"), LimitsConfig())


def test_faces_place_the_cover_crop(tmp_path: Path) -> None:
    """The astronaut on the right of a wide frame: the square follows the face passed in."""
    canvas = np.zeros((256, 640, 3), np.uint8)
    face = astronaut().thumbnail_image(256).numpy()[:, :, :3]
    canvas[:, 384:] = face[:, :, ::-1]
    video = write_video(tmp_path / "astro.avi", [canvas] * 3, "MJPG")
    opts = PreviewOptions(sizing=Sizing(Fit.SQUARE, 128))
    faces = [Face(384 + 85, 20, 60, 70, 0.95)]  # her face, in frame coordinates
    out = render_cover(Source(path=str(video)), opts, LimitsConfig(), OutputConfig(), VideoConfig(), faces)
    image = pyvips.Image.new_from_buffer(out.data, "")
    centred = render_cover(Source(path=str(video)), opts, LimitsConfig(), OutputConfig(), VideoConfig())
    assert (out.format, image.width, image.height) == ("jpeg", 128, 128)
    # the centre of the frame is mostly the black canvas; the face crop is all astronaut
    assert image.avg() > pyvips.Image.new_from_buffer(centred.data, "").avg() + 30


@pytest.mark.parametrize("degrees,size", [(90, (48, 64)), (180, (64, 48)), (270, (48, 64))])
def test_display_rotation_is_honoured(tmp_path: Path, degrees: int, size: tuple[int, int]) -> None:
    video = rotate_mp4(write_video(tmp_path / "r.mp4", top_red(64, 48), "mp4v"), degrees)
    out = render_cover(Source(path=str(video)), PreviewOptions(), LimitsConfig(), OutputConfig(),
                       VideoConfig())
    image = pyvips.Image.new_from_buffer(out.data, "")
    assert (image.width, image.height) == size
    if degrees == 180:  # upside down on disk, upright on screen: the red half goes to the bottom
        assert rgb_at(image, 32, 40)[0] > 180 and rgb_at(image, 32, 8)[2] > 180


# ---- through the app ------------------------------------------------------------------------------


@pytest.mark.parametrize("fourcc,name", [("MJPG", "clip.avi"), ("mp4v", "clip.mp4")])
async def test_cover_through_the_app(client, media: Path, fourcc: str, name: str) -> None:
    write_video(media / name, solid(320, 240, RED), fourcc)
    image, ctype = await cover(client, name, "size=100")
    assert (image.width, image.height, ctype) == (100, 100, "image/jpeg")
    assert rgb_at(image, 50, 50)[0] > 200
    image, _ = await cover(client, name)
    assert (image.width, image.height) == (320, 240)
    image, _ = await cover(client, name, "width_size=160")
    assert (image.width, image.height) == (160, 120)


async def test_cover_from_an_http_origin(aiohttp_client, make_config, http_origin, media: Path) -> None:
    write_video(media / "clip.mp4", solid(320, 240, BLUE), "mp4v")
    cfg = make_config(libraries=[{"id": "lib", "origin": http_origin.url, "secret": "s"}])
    client = await aiohttp_client(create_app(cfg))
    image, _ = await cover(client, "clip.mp4", "size=64")
    assert (image.width, image.height) == (64, 64) and rgb_at(image, 32, 32)[2] > 200


async def test_skip_black_option(aiohttp_client, make_config, media: Path, tmp_path: Path) -> None:
    write_video(media / "fade.avi", solid(64, 48, (2, 2, 2), 4) + solid(64, 48, RED, 3), "MJPG")
    plain = await aiohttp_client(create_app(make_config()))
    assert (await cover(plain, "fade.avi"))[0].avg() < 20
    # its own cache: the option is not part of the cache key (a config change, like a new version)
    cfg = make_config(video={"skip_black": True}, cache={"dir": str(tmp_path / "cache-skip")})
    skipping = await aiohttp_client(create_app(cfg))
    assert rgb_at((await cover(skipping, "fade.avi"))[0], 32, 24)[0] > 200


@pytest.mark.parametrize("data", [b"", b"not a video at all"])
async def test_broken_video_is_415_fast(client, media: Path, data: bytes) -> None:
    (media / "empty.webm").write_bytes(data)
    resp = await client.get("/api/v1/file/lib/-/empty.webm?preview&size=100", allow_redirects=False)
    assert resp.status == 415
    assert (await resp.json())["code"] == "UnsupportedMedia"


async def test_video_over_the_pixel_limit_is_413(aiohttp_client, make_config, media: Path) -> None:
    write_video(media / "clip.avi", solid(320, 240, RED), "MJPG")
    client = await aiohttp_client(create_app(make_config(limits={"max_source_pixels": 320 * 240 - 1})))
    resp = await client.get("/api/v1/file/lib/-/clip.avi?preview", allow_redirects=False)
    assert resp.status == 413


# ---- the corpus ----------------------------------------------------------------------------------


def corpus_videos() -> list[str]:
    folder = CORPUS / "video"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@needs_corpus()
@pytest.mark.parametrize("name", corpus_videos())
async def test_corpus_video(client, media: Path, name: str) -> None:
    shutil.copyfile(CORPUS / "video" / name, media / name)
    cap = cv2.VideoCapture(str(media / name))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    side = min(160, width, height)  # the 1x1 MP4 gives a 1x1 cover: never upscaled (API section 1)
    image, ctype = await cover(client, name, "size=160")
    assert (image.width, image.height, ctype) == (side, side, "image/jpeg")
    image, _ = await cover(client, name)
    assert (image.width, image.height) == (width, height)


@needs_corpus()
async def test_corpus_iphone_mov_is_upright(client, media: Path) -> None:
    name = "fluent_IMG_0034.MOV"
    shutil.copyfile(CORPUS / "video" / name, media / name)
    cap = cv2.VideoCapture(str(media / name))
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    ok, stored = cap.read()
    cap.release()
    assert ok
    image, _ = await cover(client, name)
    out = image.colourspace("b-w").extract_band(0).numpy().astype(float)
    raw = cv2.cvtColor(stored, cv2.COLOR_BGR2GRAY).astype(float)
    upright, as_stored = np.corrcoef(out.ravel(), raw[::-1, ::-1].ravel())[0, 1], np.corrcoef(
        out.ravel(), raw.ravel())[0, 1]
    assert upright > 0.9 > as_stored


@needs_corpus()
async def test_corpus_empty_webm_is_415(client, media: Path) -> None:
    shutil.copyfile(CORPUS / "hostile" / "moviepy_result_empty.webm", media / "empty.webm")
    resp = await client.get("/api/v1/file/lib/-/empty.webm?preview", allow_redirects=False)
    assert resp.status == 415
