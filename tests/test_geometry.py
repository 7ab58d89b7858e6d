"""``proxy.geometry``: output sizes for every sizing rule, the centre box, EXIF orientation.

Face-driven crops (``crop_box`` with faces) are tested with the face detector, in test_faces.py.
"""

from __future__ import annotations

import itertools

import pytest

from proxy.geometry import Plan, centre_box, oriented, plan
from proxy.types import Box, Fit, Sizing

SIZES = [(1, 1), (1, 1000), (1000, 1), (80, 60), (60, 80), (640, 427), (427, 640), (300, 500),
         (4000, 3000), (3000, 4000), (333, 333), (7, 4093), (8191, 3)]


def square(s: int) -> Sizing:
    return Sizing(Fit.SQUARE, size=s)


def scale(p: int) -> Sizing:
    return Sizing(Fit.SCALE, size=p)


def box(w: int = 0, h: int = 0) -> Sizing:
    return Sizing(Fit.BOX, width=w, height=h)


# ---- size=S -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "s", "resize", "side"), [
    ((640, 427), 200, (300, 200), 200),   # landscape: the short side becomes S
    ((427, 640), 200, (200, 300), 200),   # portrait
    ((300, 500), 200, (200, 333), 200),
    ((500, 500), 200, (200, 200), 200),
    ((80, 60), 400, (80, 60), 60),        # never upscale: the short side is the most
    ((80, 60), 70, (80, 60), 60),
    ((80, 60), 60, (80, 60), 60),
    ((80, 60), 30, (40, 30), 30),
    ((1, 1000), 200, (1, 1000), 1),
])
def test_square(source: tuple[int, int], s: int, resize: tuple[int, int], side: int) -> None:
    p = plan(*source, square(s))
    assert p == Plan(resize, side)
    assert p.output == (side, side)


@pytest.mark.parametrize(("source", "s"), list(itertools.product(SIZES, [1, 7, 100, 200, 333, 4096])))
def test_square_covers_exactly(source: tuple[int, int], s: int) -> None:
    w, h = source
    p = plan(w, h, square(s))
    side = min(s, w, h)
    assert p.output == (side, side)
    rw, rh = p.resize
    assert min(rw, rh) == side                  # covers the square, short side exact
    assert rw >= side and rh >= side
    assert rw <= w and rh <= h                  # never upscaled
    if w >= h:                                  # the long side keeps the aspect ratio within rounding
        assert abs(rw - w * side / h) <= 0.5 + 1e-9
    else:
        assert abs(rh - h * side / w) <= 0.5 + 1e-9


# ---- scale=P ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "p", "resize"), [
    ((640, 427), 50, (320, 214)),   # 213.5 rounds to the nearest (even) whole pixel
    ((640, 427), 100, (640, 427)),
    ((640, 427), 10, (64, 43)),
    ((300, 500), 33, (99, 165)),
    ((80, 60), 1, (1, 1)),          # never below one pixel
    ((1000, 1), 50, (500, 1)),
])
def test_scale(source: tuple[int, int], p: int, resize: tuple[int, int]) -> None:
    assert plan(*source, scale(p)) == Plan(resize)
    assert plan(*source, scale(p)).output == resize


@pytest.mark.parametrize(("source", "p"), list(itertools.product(SIZES, [1, 13, 50, 99, 100])))
def test_scale_is_proportional(source: tuple[int, int], p: int) -> None:
    w, h = source
    rw, rh = plan(w, h, scale(p)).resize
    assert 1 <= rw <= w and 1 <= rh <= h
    assert abs(rw - max(1.0, w * p / 100)) <= 0.5 + 1e-9 or rw == 1
    assert abs(rh - max(1.0, h * p / 100)) <= 0.5 + 1e-9 or rh == 1


# ---- width_size / height_size -----------------------------------------------------------------------


@pytest.mark.parametrize(("source", "sizing", "resize"), [
    ((640, 427), box(w=320), (320, 214)),
    ((300, 500), box(w=100), (100, 167)),
    ((300, 500), box(h=100), (60, 100)),
    ((640, 427), box(h=100), (150, 100)),
    ((640, 427), box(100, 100), (100, 67)),     # both: fit inside, never distort
    ((300, 500), box(100, 100), (60, 100)),
    ((640, 427), box(320, 1000), (320, 214)),
    ((640, 427), box(1000, 100), (150, 100)),
    ((80, 60), box(w=800), (80, 60)),           # never upscale
    ((80, 60), box(h=600), (80, 60)),
    ((80, 60), box(800, 600), (80, 60)),
    ((80, 60), box(40, 600), (40, 30)),
    ((1000, 1), box(w=10), (10, 1)),
])
def test_box(source: tuple[int, int], sizing: Sizing, resize: tuple[int, int]) -> None:
    assert plan(*source, sizing) == Plan(resize)


@pytest.mark.parametrize(("source", "bound"), list(itertools.product(
    SIZES, [(1, 1), (100, 0), (0, 100), (100, 100), (50, 300), (8192, 8192)])))
def test_box_fits_inside_and_touches_a_side(source: tuple[int, int], bound: tuple[int, int]) -> None:
    w, h = source
    bw, bh = bound
    rw, rh = plan(w, h, box(bw, bh)).resize
    assert 1 <= rw <= w and 1 <= rh <= h
    if bw:
        assert rw <= bw
    if bh:
        assert rh <= bh
    limits = [rw == w and rh == h]                 # kept at the source size (never upscaled) ...
    if bw:
        limits.append(rw == bw)                    # ... or one side reaches its bound
    if bh:
        limits.append(rh == bh)
    assert any(limits)
    if min(rw, rh) > 1:                            # the aspect ratio holds within a pixel's rounding
        assert abs(rw / rh - w / h) <= (w / h) * (1 / min(rw, rh) + 1e-9) * 1.01


def test_original() -> None:
    for w, h in SIZES:
        assert plan(w, h, Sizing()) == Plan((w, h))
        assert plan(w, h, Sizing()).output == (w, h)


# ---- centre box, orientation ------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "side", "expected"), [
    ((300, 200), 200, Box(50, 0, 200, 200)),
    ((200, 333), 200, Box(0, 66, 200, 200)),
    ((301, 200), 200, Box(50, 0, 200, 200)),
    ((200, 200), 200, Box(0, 0, 200, 200)),
    ((80, 60), 60, Box(10, 0, 60, 60)),
])
def test_centre_box(size: tuple[int, int], side: int, expected: Box) -> None:
    assert centre_box(*size, side) == expected


@pytest.mark.parametrize(("source", "s"), list(itertools.product(SIZES, [1, 100, 200, 4096])))
def test_centre_box_of_a_plan_is_inside_the_resized_image(source: tuple[int, int], s: int) -> None:
    p = plan(*source, square(s))
    rw, rh = p.resize
    b = centre_box(rw, rh, p.side)
    assert (b.width, b.height) == (p.side, p.side)
    assert b.left >= 0 and b.right <= rw and b.top >= 0 and b.bottom <= rh
    assert abs((b.left + b.right) - rw) <= 1 and abs((b.top + b.bottom) - rh) <= 1   # centred


@pytest.mark.parametrize(("orientation", "expected"), [
    (1, (400, 240)), (2, (400, 240)), (3, (400, 240)), (4, (400, 240)),
    (5, (240, 400)), (6, (240, 400)), (7, (240, 400)), (8, (240, 400)),
    (0, (400, 240)), (9, (400, 240)),   # missing or invalid tags leave the image as stored
])
def test_oriented(orientation: int, expected: tuple[int, int]) -> None:
    assert oriented(400, 240, orientation) == expected


def test_faces_follow_a_resize_by_its_long_side() -> None:
    from proxy.geometry import scale_faces
    from proxy.types import Face

    # 20 x 2000 resized to a 320 px long view is 3 x 320 (the short side rounded from 3.2):
    # by the widths a face would move by 6.67x, by the long sides by the true 6.25x
    face = Face(1.0, 100.0, 1.0, 16.0, 0.9)
    (back,) = scale_faces([face], (3, 320), (20, 2000))
    assert (back.y, back.h) == (625.0, 100.0)
    assert back.score == 0.9
    (there,) = scale_faces([back], (20, 2000), (3, 320))
    assert there == face
