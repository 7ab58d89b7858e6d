"""The face debug view (``&debug=faces``, only with ``faces.debug = true``): why a crop went where it did.

The whole image scaled to fit 1024 px, every detection drawn (green: kept, red: dropped as weak or
tiny by ``geometry.keep_faces``) and, for ``size=S``, the square the crop takes (blue). Synchronous.
"""

from __future__ import annotations

import pyvips

from .config import FacesConfig, OutputConfig
from .faces import detect_sides
from .geometry import crop_box, keep_faces, plan, scale_faces
from .render import Probe, Rendered, Source, encode, find_faces, thumbnail
from .request import PreviewOptions
from .types import Fit, Sizing

VIEW_SIDE = 1024
GREEN, RED, BLUE = [40, 220, 40], [230, 40, 40], [40, 120, 255]


def _frame(image: pyvips.Image, left: float, top: float, width: float, height: float,
           ink: list[int], thickness: int = 3) -> pyvips.Image:
    for i in range(thickness):
        x, y = max(0, round(left) - i), max(0, round(top) - i)
        w = min(image.width - x, round(width) + 2 * i)
        h = min(image.height - y, round(height) + 2 * i)
        if w > 0 and h > 0:
            image = image.draw_rect(ink, x, y, w, h, fill=False)
    return image


def render_debug(src: Source, info: Probe, options: PreviewOptions, output: OutputConfig,
                 faces_cfg: FacesConfig) -> Rendered:
    """The debug picture for ``options`` (always JPEG)."""
    side = detect_sides(faces_cfg)[-1]
    small_size = plan(info.width, info.height, Sizing(Fit.BOX, side, side)).resize
    small = thumbnail(src, info, small_size).copy_memory()
    found, _ = find_faces(small, faces_cfg)
    view_size = plan(info.width, info.height, Sizing(Fit.BOX, VIEW_SIDE, VIEW_SIDE)).resize
    view = thumbnail(src, info, view_size)
    if view.hasalpha():
        view = view.flatten(background=[255, 255, 255])
    view = view.extract_band(0, n=3).cast("uchar").copy_memory()
    faces = scale_faces(found, view.width / small.width)
    kept = keep_faces(faces, view.width, view.height)
    for face in faces:
        view = _frame(view, face.x, face.y, face.w, face.h, GREEN if face in kept else RED)
    if options.sizing.fit is Fit.SQUARE:
        todo = plan(info.width, info.height, options.sizing)
        factor = todo.resize[0] / view.width
        box = crop_box(todo.resize[0], todo.resize[1], todo.side, scale_faces(kept, factor))
        view = _frame(view, box.left / factor, box.top / factor, box.width / factor, box.height / factor,
                      BLUE, thickness=4)
    return encode(view, "jpeg", output)

