"""Output sizes and crop boxes: pure arithmetic on integers and boxes (no pyvips, no I/O).

``plan(W, H, sizing)`` says what a render must produce from a W x H (already EXIF-oriented) source:
the size to resize to, and for ``size=S`` the S' x S' box to cut from the resized image.
``crop_box`` places that box: on the faces when there are any, else at the centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .types import Box, Face, Fit, Sizing

ORIENTATION_SWAPS = frozenset({5, 6, 7, 8})  # EXIF orientations that turn the image a quarter


@dataclass(frozen=True, slots=True)
class Plan:
    """Resize a W x H source to ``resize``; then, for a square, cut ``side`` x ``side`` out of it."""

    resize: tuple[int, int]
    side: int = 0  # 0: no crop

    @property
    def output(self) -> tuple[int, int]:
        return (self.side, self.side) if self.side else self.resize


def oriented(width: int, height: int, orientation: int) -> tuple[int, int]:
    """The displayed size of a stored ``width`` x ``height`` image with the EXIF ``orientation``."""
    return (height, width) if orientation in ORIENTATION_SWAPS else (width, height)


def _scaled(width: int, height: int, factor: float) -> tuple[int, int]:
    return max(1, round(width * factor)), max(1, round(height * factor))


def plan(width: int, height: int, sizing: Sizing) -> Plan:
    """What to produce from a ``width`` x ``height`` source; never larger than the source."""
    match sizing.fit:
        case Fit.SQUARE:
            side = min(sizing.size, width, height)
            factor = side / min(width, height)
            rw, rh = _scaled(width, height, factor)
            # the short side must be exactly ``side`` whatever the rounding of the long one
            return Plan((side, max(side, rh)) if width <= height else (max(side, rw), side), side)
        case Fit.SCALE:
            return Plan(_scaled(width, height, sizing.size / 100))
        case Fit.BOX:
            factors = [1.0]
            if sizing.width:
                factors.append(sizing.width / width)
            if sizing.height:
                factors.append(sizing.height / height)
            return Plan(_scaled(width, height, min(factors)))
        case _:
            return Plan((width, height))


def centre_box(width: int, height: int, side: int) -> Box:
    return Box((width - side) // 2, (height - side) // 2, side, side)


def _clamp(start: float, length: int, total: int) -> int:
    return int(min(max(round(start), 0), total - length))


# Faces smaller than this share of the image's short side, or scored below MIN_SCORE, are noise
# (a pattern in wallpaper, a face on a poster far behind): they must not pull the crop.
MIN_FACE_SHARE = 0.03
MIN_SCORE = 0.6
HEADROOM = 0.25  # share of a face's height added above it (hair, forehead) and below (chin)


def keep_faces(faces: Sequence[Face], width: int, height: int) -> list[Face]:
    """Drop weak and tiny detections; the rest are faces a person would see."""
    floor = MIN_FACE_SHARE * min(width, height)
    return [f for f in faces if f.score >= MIN_SCORE and min(f.w, f.h) >= floor]


def _head(face: Face) -> tuple[float, float, float, float]:
    """The face box grown to the whole head: room above for hair, a little below for the chin."""
    return (face.x - 0.1 * face.w, face.y - HEADROOM * face.h,
            face.x + 1.1 * face.w, face.y + (1 + 0.5 * HEADROOM) * face.h)


def _union(boxes: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes),
            max(b[2] for b in boxes), max(b[3] for b in boxes))


def _fits(boxes: Sequence[tuple[float, float, float, float]], side: float) -> bool:
    x0, y0, x1, y1 = _union(boxes)
    return x1 - x0 <= side and y1 - y0 <= side


def _around_largest(faces: Sequence[Face], side: float) -> list[Face]:
    """The largest face and as many of its nearest neighbours as fit in the square with it."""
    largest = max(faces, key=lambda f: f.w * f.h)
    cx, cy = largest.x + largest.w / 2, largest.y + largest.h / 2
    group = [largest]
    for face in sorted(faces, key=lambda f: (f.x + f.w / 2 - cx) ** 2 + (f.y + f.h / 2 - cy) ** 2):
        if face is not largest and _fits([_box(f) for f in [*group, face]], side):
            group.append(face)
    return group


def _box(face: Face) -> tuple[float, float, float, float]:
    return face.x, face.y, face.x + face.w, face.y + face.h


def crop_box(width: int, height: int, side: int, faces: Sequence[Face] = ()) -> Box:
    """Where to cut a ``side`` square from a ``width`` x ``height`` image.

    Centred on the union of the faces' heads (face boxes with room for hair and chin); if that
    cannot fit, on the union of the bare faces; if that cannot fit either, on the largest face
    with the neighbours that fit beside it. At the centre when there is no face. Always inside
    the image.
    """
    if not faces or (side >= width and side >= height):
        return centre_box(width, height, side)
    if _fits([_head(f) for f in faces], side):
        x0, y0, x1, y1 = _union([_head(f) for f in faces])
    elif _fits([_box(f) for f in faces], side):
        x0, y0, x1, y1 = _union([_box(f) for f in faces])
    else:
        group = _around_largest(faces, side)
        heads = [_head(f) for f in group]
        x0, y0, x1, y1 = _union(heads if _fits(heads, side) else [_box(f) for f in group])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # one face larger than the square: keep its top (eyes and forehead) rather than its centre
    top = y0 if y1 - y0 > side else cy - side / 2
    return Box(_clamp(cx - side / 2, side, width), _clamp(top, side, height), side, side)


def scale_faces(faces: Sequence[Face], source: tuple[int, int], target: tuple[int, int]) -> list[Face]:
    """Faces found in a ``source`` (width, height) image, in the coordinates of a resize of it to
    ``target``. By the long sides: a resize rounds its short side, to a few pixels on a long image."""
    factor = max(target) / max(source)
    return [Face(f.x * factor, f.y * factor, f.w * factor, f.h * factor, f.score) for f in faces]
