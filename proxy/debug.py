"""The face debug view (``&debug=faces``, only with ``faces.debug = true``): why a crop went where it did.

The whole image scaled to fit 1024 px, every detection drawn (green: kept, red: dropped as weak or
tiny by ``geometry.keep_faces``) and, for ``size=S``, the square the crop takes (blue). Synchronous.
"""

from __future__ import annotations

import pyvips

from .config import FacesConfig, OutputConfig
from .geometry import keep_faces, plan, scale_faces
from .render import Probe, Rendered, Source, encode, place_crop, resize_with_faces
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
    """The debug picture for ``options`` (always JPEG): the render's own detection and crop."""
    # the detection a render would make (same decode, same looks), and the view resized beside it
    view_plan = plan(info.width, info.height, Sizing(Fit.BOX, VIEW_SIDE, VIEW_SIDE))
    view, detection = resize_with_faces(src, info, view_plan, faces_cfg)
    if view.hasalpha():
        view = view.flatten(background=[255, 255, 255])
    view = view.extract_band(0, n=3).cast("uchar").copy_memory()
    source, shown = (info.width, info.height), (view.width, view.height)
    faces = scale_faces(detection.faces, source, shown)
    kept = keep_faces(faces, view.width, view.height)
    for face in faces:
        view = _frame(view, face.x, face.y, face.w, face.h, GREEN if face in kept else RED)
    todo = plan(info.width, info.height, options.sizing)
    if todo.side:
        box = place_crop(todo.resize[0], todo.resize[1], todo.side, detection.faces, source)
        scale = max(shown) / max(todo.resize)  # by the long sides, as scale_faces
        view = _frame(view, box.left * scale, box.top * scale, box.width * scale, box.height * scale,
                      BLUE, thickness=4)
    return encode(view, "jpeg", output)
