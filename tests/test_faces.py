"""Face-aware ``size=S`` through the real app, with the real detectors, on real photos.

Bare clone: scikit-image's astronaut (Haar, bundled with OpenCV) pushed to the ends of a wider or
taller canvas, so a centre crop would miss her face. With ../shared: YuNet and the corpus photos.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from conftest import CORPUS, YUNET_MODEL, astronaut, needs_corpus, preview

from proxy.app import create_app

# The astronaut's face as a person would draw it on the 512 x 512 original (forehead to chin).
FACE = (180, 70, 80, 100)
PLACEMENTS = ("right", "left", "bottom", "top")
# how much longer than the photo the canvas is: Haar looks at a 320 px view, where her face must keep
# ~35 px; YuNet finds it at half that
STRETCH = {"haar": 1.5, "yunet": 2.15}
needs_yunet = pytest.mark.skipif(not YUNET_MODEL.is_file(), reason="../shared/models not present")


def place(folder: Path, where: str, stretch: float = 1.5
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


async def app_client(aiohttp_client: Any, make_config: Any, detector: str, **faces: Any) -> Any:
    model = str(YUNET_MODEL) if detector == "yunet" else ""
    config = make_config(faces={"detector": detector, "model": model, **faces})
    return await aiohttp_client(create_app(config))


@pytest.mark.parametrize("detector", ["haar", pytest.param("yunet", marks=needs_yunet)])
@pytest.mark.parametrize("where", PLACEMENTS)
async def test_the_crop_keeps_the_face(aiohttp_client: Any, make_config: Any, media: Path, detector: str,
                                       where: str) -> None:
    name, face, _ = place(media, where, STRETCH[detector])
    client = await app_client(aiohttp_client, make_config, detector)
    render = await preview(client, name, "size=128")
    assert (render.width, render.height) == (128, 128)
    left, top = locate(render, pyvips.Image.new_from_file(str(media / name)))
    assert contains(left, top, 512, face), (where, left, top, face)


async def test_no_face_gives_the_centre_crop(aiohttp_client: Any, make_config: Any, media: Path) -> None:
    import skimage

    rocket = pyvips.Image.new_from_file(str(Path(skimage.__file__).parent / "data" / "rocket.jpg"))
    wide = rocket.embed(0, 0, rocket.width * 2, rocket.height, extend="mirror")  # no face anywhere
    wide.jpegsave(str(media / "noface.jpg"), Q=92)
    client = await app_client(aiohttp_client, make_config, "haar")
    render = await preview(client, "noface.jpg", "size=100")
    left, top = locate(render, wide)
    side = min(wide.width, wide.height)
    assert abs(left - (wide.width - side) // 2) <= 8 and top == 0


async def test_a_second_size_does_not_detect_again(aiohttp_client: Any, make_config: Any,
                                                   media: Path) -> None:
    name, _, _ = place(media, "right")
    client = await app_client(aiohttp_client, make_config, "haar")
    for size in (100, 200, 64):
        await preview(client, name, f"size={size}")
    text = await (await client.get("/metrics")).text()
    assert re.search(r'preview_face_detect_seconds_count\{detector="haar"\} 1\.0', text), text[-2000:]
    assert re.search(r"preview_render_seconds_count\{kind=\"image\"\} 3\.0", text)


async def test_scale_and_width_never_crop_or_detect(aiohttp_client: Any, make_config: Any,
                                                    media: Path) -> None:
    name, _, (width, height) = place(media, "right")
    client = await app_client(aiohttp_client, make_config, "haar")
    render = await preview(client, name, "width_size=550")
    assert (render.width, render.height) == (550, round(height * 550 / width))
    text = await (await client.get("/metrics")).text()
    assert not re.search(r"preview_face_detect_seconds_count\{[^}]*\} [1-9]", text)


async def test_a_failing_detector_falls_back_to_the_centre(aiohttp_client: Any, make_config: Any,
                                                           media: Path, tmp_path: Path) -> None:
    bad_model = tmp_path / "broken.onnx"
    bad_model.write_bytes(b"this is not an ONNX model")
    name, _, (width, height) = place(media, "right")
    # version_ttl 0: no micro-cached 302, so the second request below is decided afresh
    config = make_config(faces={"detector": "yunet", "model": str(bad_model)}, cache={"version_ttl": 0})
    client = await aiohttp_client(create_app(config))
    render = await preview(client, name, "size=128")
    left, _ = locate(render, pyvips.Image.new_from_file(str(media / name)))
    assert abs(left - (width - height) // 2) <= 8  # the centre, and still a 302
    text = await (await client.get("/metrics")).text()
    assert re.search(r"preview_face_detect_failures_total 1\.0", text)
    # the fallback is not kept as the answer: the next request tries the detector again
    render = await preview(client, name, "size=128")
    text = await (await client.get("/metrics")).text()
    assert re.search(r"preview_face_detect_failures_total 2\.0", text)


async def test_the_debug_view_is_off_by_default(aiohttp_client: Any, make_config: Any, media: Path) -> None:
    name, _, _ = place(media, "right")
    client = await app_client(aiohttp_client, make_config, "haar")
    render = await preview(client, name, "size=128&debug=faces")
    assert (render.width, render.height) == (128, 128)  # an ordinary preview


async def test_the_debug_view_draws_faces_and_the_crop(aiohttp_client: Any, make_config: Any,
                                                       media: Path) -> None:
    name, face, (width, _) = place(media, "right")
    client = await app_client(aiohttp_client, make_config, "haar", debug=True)
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
@needs_yunet
@pytest.mark.parametrize(("name", "box"), [
    ("facerec_two_people.jpg", (750, 40, 140, 190)),        # the larger of two faces cannot both fit
    ("smartcrop_500px_65131509.jpg", (230, 110, 120, 170)),  # a small face near the top of a tall frame
    ("thumbor_Giunchedi_Filippo_2015.jpg", (320, 80, 160, 210)),
])
async def test_yunet_on_corpus_photos(aiohttp_client: Any, make_config: Any, media: Path, name: str,
                                      box: tuple[int, int, int, int]) -> None:
    (media / name).write_bytes((CORPUS / "faces" / name).read_bytes())
    client = await app_client(aiohttp_client, make_config, "yunet")
    render = await preview(client, name, "size=160")
    source = pyvips.Image.new_from_file(str(media / name))
    left, top = locate(render, source)
    assert contains(left, top, min(source.width, source.height), box, slack=20), (left, top)


async def test_detections_outlive_a_restart_with_the_redis_store(aiohttp_client: Any, make_config: Any,
                                                                 media: Path, redis_url: str) -> None:
    name, _, _ = place(media, "right")
    config = make_config(faces={"detector": "haar"}, store={"url": redis_url})
    first = await aiohttp_client(create_app(config))
    await preview(first, name, "size=100")
    await first.close()
    second = await aiohttp_client(create_app(config))  # a new process's worth of state, same store
    await preview(second, name, "size=150")
    text = await (await second.get("/metrics")).text()
    assert re.search(r'preview_render_seconds_count\{kind="image"\} 1\.0', text)
    assert not re.search(r"preview_face_detect_seconds_count\{[^}]*\} [1-9]", text)


@pytest.mark.parametrize("width", [1, 40, 128, 200, 319, 320, 321, 379, 504, 640])
@pytest.mark.parametrize("height", [1, 75, 160, 241, 320, 321, 378, 480, 640])
def test_every_view_lands_on_a_shape_of_its_size(width: int, height: int) -> None:
    from proxy.faces import grid, padded_shape

    shape = padded_shape(width, height, (320, 640))
    assert shape in (grid(320) if max(width, height) <= 320 else grid(640))
    assert len(grid(320)) == len(grid(640)) == 7
    assert shape[0] >= width and shape[1] >= height  # the whole view is looked at
    # padded along the short side, never turned
    assert shape[0] >= shape[1] if width >= height else shape[1] >= shape[0]


@needs_yunet
def test_yunet_keeps_one_network_per_grid_shape() -> None:
    from proxy.faces import _Yunet, grid

    yunet = _Yunet(str(YUNET_MODEL), (320, 640))
    yunet.warm_up()
    shapes = grid(320) | grid(640)
    assert set(yunet._nets) == shapes
    for width in range(330, 800, 60):  # views of every size: no new network is kept
        yunet(np.zeros((300, width, 3), np.uint8))
    assert set(yunet._nets) == shapes
    # a small photo runs on a padded grid shape: the face is still found where it is
    small = astronaut().resize(200 / 512)
    rgb = np.ndarray(buffer=small.write_to_memory(), dtype=np.uint8, shape=(200, 200, 3))
    faces = yunet(rgb)
    x, y, w, h = (v * 200 / 512 for v in FACE)
    assert any(abs(f.x + f.w / 2 - (x + w / 2)) < w / 3 and abs(f.y + f.h / 2 - (y + h / 2)) < h / 3
               for f in faces)
