"""Face-aware ``size=S`` through the real app, with the shipped YuNet model, on real photos.

Bare clone: scikit-image's astronaut pushed to the ends of a canvas twice as wide or tall, so a
centre crop would miss her face; a crowd built from her portrait. With ../shared: corpus photos.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from conftest import CORPUS, astronaut, config_raw, needs_corpus, preview, write_config

from proxy import faces as faces_module
from proxy import service
from proxy.app import create_app
from proxy.config import FacesConfig
from proxy.keys import PREVIEWS
from proxy.request import FileRef, parse_options
from proxy.types import Face, MediaKind

# The astronaut's face as a person would draw it on the 512 x 512 original (forehead to chin).
FACE = (180, 70, 80, 100)
PLACEMENTS = ("right", "left", "bottom", "top")
SHIPPED = faces_module.MODEL_DIR / faces_module.MODEL_NAME


def place(folder: Path, where: str, stretch: float = 2.0
          ) -> tuple[str, tuple[int, int, int, int], tuple[int, int]]:
    """The astronaut at one end of a grey canvas ``stretch`` times her size; her face box moved too."""
    long = round(512 * stretch)
    width, height = (long, 512) if where in ("left", "right") else (512, long)
    x = long - 512 if where == "right" else 0
    y = long - 512 if where == "bottom" else 0
    canvas = astronaut().embed(x, y, width, height, extend="background", background=[128, 128, 128])
    name = f"astronaut-{where}.jpg"
    canvas.jpegsave(str(folder / name), Q=92)
    return name, (FACE[0] + x, FACE[1] + y, FACE[2], FACE[3]), (width, height)


def locate(render: pyvips.Image, source: pyvips.Image) -> tuple[int, int]:
    """Where a square render was cut from ``source``: best match of its pixels (grey, small)."""
    side = min(source.width, source.height)
    scale = render.width / side
    small = source.resize(scale).colourspace("b-w")[0]
    crop = render.colourspace("b-w")[0]
    src = np.ndarray(buffer=small.write_to_memory(), dtype=np.uint8, shape=(small.height, small.width))
    out = np.ndarray(buffer=crop.write_to_memory(), dtype=np.uint8, shape=(crop.height, crop.width))
    best, where = np.inf, (0, 0)
    for top in range(0, src.shape[0] - out.shape[0] + 1, 2):
        for left in range(0, src.shape[1] - out.shape[1] + 1, 2):
            diff = np.abs(src[top:top + out.shape[0], left:left + out.shape[1]].astype(int) - out).mean()
            if diff < best:
                best, where = diff, (left, top)
    return round(where[0] / scale), round(where[1] / scale)


def contains(left: int, top: int, side: int, box: tuple[int, int, int, int], slack: int = 12) -> bool:
    x, y, w, h = box
    return (left - slack <= x and top - slack <= y and x + w <= left + side + slack
            and y + h <= top + side + slack)


async def app_client(aiohttp_client: Any, make_config: Any, cache: dict[str, Any] | None = None,
                     **faces: Any) -> Any:
    config = make_config(faces={"detector": "auto", **faces}, cache=cache or {})
    return await aiohttp_client(create_app(config))


@pytest.mark.parametrize("where", PLACEMENTS)
async def test_the_crop_keeps_the_face(aiohttp_client: Any, make_config: Any, media: Path,
                                       where: str) -> None:
    name, face, _ = place(media, where)  # 1024 x 512 or 512 x 1024: a centre crop misses her face
    client = await app_client(aiohttp_client, make_config)
    render = await preview(client, name, "size=128")
    assert (render.width, render.height) == (128, 128)
    left, top = locate(render, pyvips.Image.new_from_file(str(media / name)))
    assert contains(left, top, 512, face), (where, left, top, face)


async def test_no_face_gives_the_centre_crop(aiohttp_client: Any, make_config: Any, media: Path) -> None:
    import skimage

    rocket = pyvips.Image.new_from_file(str(Path(skimage.__file__).parent / "data" / "rocket.jpg"))
    wide = rocket.embed(0, 0, rocket.width * 2, rocket.height, extend="mirror")  # no face anywhere
    wide.jpegsave(str(media / "noface.jpg"), Q=92)
    client = await app_client(aiohttp_client, make_config)
    render = await preview(client, "noface.jpg", "size=100")
    left, top = locate(render, wide)
    side = min(wide.width, wide.height)
    assert abs(left - (wide.width - side) // 2) <= 8 and top == 0


async def test_a_second_size_does_not_detect_again(aiohttp_client: Any, make_config: Any,
                                                   media: Path) -> None:
    name, _, _ = place(media, "right")
    client = await app_client(aiohttp_client, make_config)
    for size in (100, 200, 64):
        await preview(client, name, f"size={size}")
    text = await (await client.get("/metrics")).text()
    assert re.search(r'preview_face_detect_seconds_count\{detector="yunet"\} 1\.0', text), text[-2000:]
    assert re.search(r"preview_render_seconds_count\{kind=\"image\"\} 3\.0", text)


async def test_scale_and_width_never_crop_or_detect(aiohttp_client: Any, make_config: Any,
                                                    media: Path) -> None:
    name, _, (width, height) = place(media, "right")
    client = await app_client(aiohttp_client, make_config)
    render = await preview(client, name, "width_size=550")
    assert (render.width, render.height) == (550, round(height * 550 / width))
    text = await (await client.get("/metrics")).text()
    assert not re.search(r"preview_face_detect_seconds_count\{[^}]*\} [1-9]", text)


class Clock:
    """``time.time`` for the service module, moved on by the test instead of by sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


async def test_a_failing_detection_backs_off_to_the_centre(aiohttp_client: Any, make_config: Any, media: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime failing on one photo (it cannot be made to fail for real with a model that
    loads): the centre crop is served, and for the back-off the source is neither fetched nor
    rendered again; after it, the detector is tried again."""
    name, face, (width, height) = place(media, "right")
    clock = Clock()
    monkeypatch.setattr(service, "time", clock)
    real_call = faces_module.YuNet.__call__

    def broken(self: faces_module.YuNet, rgb: np.ndarray) -> list[Face]:
        raise RuntimeError("onnxruntime: bad input")

    # version_ttl 0: no micro-cached 302, so every request below is decided afresh
    client = await app_client(aiohttp_client, make_config, cache={"version_ttl": 0})
    monkeypatch.setattr(faces_module.YuNet, "__call__", broken)  # after the warm-up at start
    source = pyvips.Image.new_from_file(str(media / name))
    for _ in range(3):
        left, _ = locate(await preview(client, name, "size=128"), source)
        assert abs(left - (width - height) // 2) <= 8  # the centre, and still a 302
    text = await (await client.get("/metrics")).text()
    assert re.search(r"preview_face_detect_failures_total 1\.0", text)
    assert re.search(r'preview_render_seconds_count\{kind="image"\} 1\.0', text)  # rendered once
    # another process that was waiting on the render lock meanwhile: it takes the fallback too
    previews = client.server.app[PREVIEWS]
    lib = previews.config.libraries[0]
    ref = FileRef(lib.id, "-", name)
    st = await previews.source_stat(lib, "", ref)  # "": a single-tenant library's origin folder
    model = previews.model(ref, st.version, parse_options({"size": "128"}), MediaKind.IMAGE)
    rel = previews._rel(model, False)
    assert await previews._render(lib, "", model, st, rel) == (service.centre_fallback(rel), None)
    monkeypatch.setattr(faces_module.YuNet, "__call__", real_call)  # the detector works again
    clock.now += service.BACKOFF[0] + 1
    left, top = locate(await preview(client, name, "size=128"), source)
    assert contains(left, top, 512, face), (left, top)
    text = await (await client.get("/metrics")).text()
    assert re.search(r'preview_render_seconds_count\{kind="image"\} 2\.0', text)


async def test_an_animation_keeps_its_faces_at_every_size(aiohttp_client: Any, make_config: Any,
                                                          media: Path) -> None:
    """Faces found on a GIF's first frame (decoded at most 640 px) are stored in the source's
    coordinates: a second size, cropped from the stored boxes, keeps the face as the first did."""
    name, face, (_, height) = place(media, "right")  # 1024 x 512
    still = pyvips.Image.new_from_file(str(media / name))
    frames = still.join(still.invert(), "vertical")  # two frames, one page each
    frames = frames.copy()
    frames.set_type(pyvips.GValue.gint_type, "page-height", height)
    frames.gifsave(str(media / "astronaut.gif"))
    client = await app_client(aiohttp_client, make_config)
    for size in (128, 100):
        render = await preview(client, "astronaut.gif", f"size={size}")
        assert render.get("n-pages") == 2
        left, top = locate(render.crop(0, 0, size, size), still)
        assert contains(left, top, height, face), (size, left, top)
    text = await (await client.get("/metrics")).text()
    assert re.search(r'preview_face_detect_seconds_count\{detector="yunet"\} 1\.0', text)  # detected once


def test_the_detector_id_names_the_model_and_the_search(tmp_path: Path) -> None:
    shipped = faces_module.detector_id(FacesConfig())
    copy = tmp_path / "same.onnx"
    copy.write_bytes(SHIPPED.read_bytes())
    other = tmp_path / "other.onnx"
    other.write_bytes(SHIPPED.read_bytes() + b"\0")
    assert faces_module.detector_id(FacesConfig(model=str(copy))) == shipped
    assert faces_module.detector_id(FacesConfig(model=str(other))) != shipped
    assert faces_module.detector_id(FacesConfig(second_look=0)) != shipped
    assert faces_module.detector_id(FacesConfig(detector="none")) == "none"


async def test_the_debug_view_is_off_by_default(aiohttp_client: Any, make_config: Any, media: Path) -> None:
    name, _, _ = place(media, "right")
    client = await app_client(aiohttp_client, make_config)
    render = await preview(client, name, "size=128&debug=faces")
    assert (render.width, render.height) == (128, 128)  # an ordinary preview


async def test_the_debug_view_draws_faces_and_the_crop(aiohttp_client: Any, make_config: Any,
                                                       media: Path) -> None:
    name, face, (width, _) = place(media, "right")
    client = await app_client(aiohttp_client, make_config, debug=True)
    view = await preview(client, name, "size=128&debug=faces")
    assert max(view.width, view.height) == min(1024, width) and view.get("test-content-type") == "image/jpeg"
    pixels = np.ndarray(buffer=view.write_to_memory(), dtype=np.uint8, shape=(view.height, view.width, 3))
    green = (pixels[:, :, 1] > 180) & (pixels[:, :, 0] < 100) & (pixels[:, :, 2] < 100)
    xs = np.nonzero(green)[1]
    scale = view.width / width
    assert len(xs) > 100  # the face box is drawn in green, around the face
    assert abs(xs.mean() / scale - (face[0] + face[2] / 2)) < 40
    blue = (pixels[:, :, 2] > 200) & (pixels[:, :, 0] < 100)
    assert blue.sum() > 100  # and the chosen square in blue


@needs_corpus()
@pytest.mark.parametrize(("name", "box"), [
    ("facerec_two_people.jpg", (750, 40, 140, 190)),        # the larger of two faces cannot both fit
    ("smartcrop_500px_65131509.jpg", (230, 110, 120, 170)),  # a small face near the top of a tall frame
    ("thumbor_Giunchedi_Filippo_2015.jpg", (320, 80, 160, 210)),
])
async def test_yunet_on_corpus_photos(aiohttp_client: Any, make_config: Any, media: Path, name: str,
                                      box: tuple[int, int, int, int]) -> None:
    (media / name).write_bytes((CORPUS / "faces" / name).read_bytes())
    client = await app_client(aiohttp_client, make_config)
    render = await preview(client, name, "size=160")
    source = pyvips.Image.new_from_file(str(media / name))
    left, top = locate(render, source)
    assert contains(left, top, min(source.width, source.height), box, slack=20), (left, top)


async def test_detections_outlive_a_restart_with_the_redis_store(aiohttp_client: Any, make_config: Any,
                                                                 media: Path, redis_url: str) -> None:
    name, _, _ = place(media, "right")
    config = make_config(faces={"detector": "auto"}, store={"url": redis_url})
    first = await aiohttp_client(create_app(config))
    await preview(first, name, "size=100")
    await first.close()
    second = await aiohttp_client(create_app(config))  # a new process's worth of state, same store
    await preview(second, name, "size=150")
    text = await (await second.get("/metrics")).text()
    assert re.search(r'preview_render_seconds_count\{kind="image"\} 1\.0', text)
    assert not re.search(r"preview_face_detect_seconds_count\{[^}]*\} [1-9]", text)


# ---- the detector itself -------------------------------------------------------------------------


def heads(width: int, height: int, cells: dict[tuple[int, int, int], tuple[float, ...]]
          ) -> dict[str, np.ndarray]:
    """YuNet's raw outputs for a ``width`` x ``height`` input, all empty (score 0) but ``cells``:
    (stride, row, col) -> (score, dx, dy, log w, log h) in cells."""
    out: dict[str, np.ndarray] = {}
    for stride in (8, 16, 32):
        n = (width // stride) * (height // stride)
        out[f"cls_{stride}"] = np.zeros((1, n, 1), np.float32)
        out[f"obj_{stride}"] = np.zeros((1, n, 1), np.float32)
        out[f"bbox_{stride}"] = np.zeros((1, n, 4), np.float32)
        out[f"kps_{stride}"] = np.zeros((1, n, 10), np.float32)
    for (stride, row, col), (score, dx, dy, lw, lh) in cells.items():
        i = row * (width // stride) + col
        out[f"cls_{stride}"][0, i, 0] = out[f"obj_{stride}"][0, i, 0] = score  # sqrt(s * s) = s
        out[f"bbox_{stride}"][0, i] = (dx, dy, lw, lh)
    return out


def test_decode_places_boxes_by_stride_cell_and_offset() -> None:
    raw = heads(64, 96, {(8, 2, 3): (0.9, 0.5, 0.5, math.log(2), math.log(3)),
                         (32, 1, 1): (0.7, 0.0, 0.25, 0.0, math.log(0.5)),
                         (16, 0, 0): (0.5, 0.0, 0.0, 0.0, 0.0)})  # under the threshold
    found = sorted(faces_module.decode(raw, 64, 0.6).tolist(), key=lambda row: -row[4])
    # stride 8, cell (row 2, col 3): centre (3.5, 2.5) cells = (28, 20) px, 2 x 3 cells = 16 x 24 px
    assert [round(v, 3) for v in found[0][:4]] == [20, 8, 16, 24]
    # stride 32, cell (1, 1): centre (32, 40) px, 32 x 16 px
    assert [round(v, 3) for v in found[1][:4]] == [16, 32, 32, 16]
    assert len(found) == 2 and found[0][4] == pytest.approx(0.9)


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one() -> None:
    a, b = [10, 10, 40, 40, 0.9], [14, 12, 40, 40, 0.8]  # IoU ~0.75: one face
    c = [100, 10, 40, 40, 0.7]  # elsewhere
    d = [30, 10, 40, 40, 0.95]  # IoU 0.33 with a and 0.40 with b, over 0.3: drops both
    assert faces_module.nms(np.array([a, b, c]), 0.3).tolist() == [a, c]
    assert faces_module.nms(np.array([c, b, a, d]), 0.3).tolist() == [d, c]
    assert faces_module.nms(np.empty((0, 5)), 0.3).shape == (0, 5)


def crowd(tiles: int, tile: int) -> np.ndarray:
    """A ``tiles`` x ``tiles`` collage of the astronaut's portrait, ``tile`` px each, as RGB."""
    one = astronaut().resize(tile / 512)
    row = pyvips.Image.arrayjoin([one] * tiles * tiles, across=tiles)
    return np.ndarray(buffer=row.write_to_memory(), dtype=np.uint8, shape=(row.height, row.width, 3))


def test_a_crowd_of_more_than_fifty_keeps_its_faces() -> None:
    detector = faces_module.load(FacesConfig())
    assert detector is not None
    found = detector(crowd(8, 128))  # 64 faces of ~20 x 25 px
    centres = {(int((f.x + f.w / 2) // 128), int((f.y + f.h / 2) // 128)) for f in found if f.score >= 0.6}
    assert len(centres) >= 60, len(centres)  # one face per tile, the cap is after NMS


def test_the_model_ships_with_its_licence() -> None:
    assert SHIPPED.is_file() and SHIPPED.stat().st_size > 100_000
    assert "Apache License" in (faces_module.MODEL_DIR / "LICENSE-yunet_n.txt").read_text()
    assert faces_module.model_path(FacesConfig()) == SHIPPED


@pytest.mark.parametrize("content", [b"", b"this is not an ONNX model", "half"])
def test_a_model_that_cannot_load_is_named_in_one_line(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(SHIPPED.read_bytes()[: SHIPPED.stat().st_size // 2] if content == "half" else content)
    with pytest.raises(faces_module.FaceModelError) as caught:
        faces_module.YuNet(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def serve(config: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    command = [*prefix, sys.executable, "-m", "proxy", "serve", "--config", str(config), "--port", "0"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parent.parent)


def model_config(folder: Path, model: Path) -> Path:
    raw = config_raw(folder, folder, faces={"detector": "auto", "model": str(model)},
                     libraries=[{"id": "lib", "origin": str(folder), "secret": "x"}])
    return write_config(folder / "c.toml", raw)


def test_serve_stops_on_a_truncated_model_with_one_line(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(SHIPPED.read_bytes()[:1000])
    started = time.monotonic()
    done = serve(model_config(tmp_path, model))
    assert done.returncode != 0 and time.monotonic() - started < 30
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(model) in lines[0] and "Traceback" not in done.stderr, done.stderr


@pytest.mark.skipif(not shutil.which("setpriv"), reason="util-linux setpriv not installed")
def test_serve_stops_on_a_model_it_cannot_read(tmp_path: Path) -> None:
    """What the old Docker image did (a model the service's user may not read): the service, without
    the capability to read past file modes, refuses to start, naming the file."""
    model = tmp_path / "model.onnx"
    model.write_bytes(SHIPPED.read_bytes())
    model.chmod(0)
    no_override = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
    done = serve(model_config(tmp_path, model), no_override if os.geteuid() == 0 else ())
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and str(model) in lines[0], done.stderr
