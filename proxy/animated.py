"""Animated GIF and WebP: every frame resized and cut with one crop box, or N frames kept. Synchronous.

libvips 8.18's ``thumbnail`` with ``crop`` on an ``n=-1`` animation collapses it to one square
(measured: 44 pages of 400x400 in, one 120x120 out). ``size=force`` does resize page by page, so we
resize the whole strip with it, then cut the one crop box out of each kept page and join the pages
back (``page-height``, ``delay``, ``loop``), the way imgproxy does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyvips

from .config import LimitsConfig, OutputConfig
from .errors import SourceTooLarge, UnsupportedMedia
from .geometry import plan
from .render import Probe, Rendered, Source, encode, place_crop
from .request import ANIMATED_FAMILIES, PreviewOptions
from .types import Box, Face, FaceFinder

FIRST_FRAME_SIDE = 640  # the first frame is decoded this small to look for faces

DEFAULT_DELAY = 100  # ms: what browsers show for a frame whose delay is missing



@dataclass(frozen=True, slots=True)
class Timing:
    """An animation's frame delays (ms, one per page) and loop count (0: forever)."""

    delays: tuple[int, ...]
    loop: int


def is_animated(info: Probe, family: str) -> bool:
    """Whether this source renders through this module: several pages, animatable output."""
    return info.pages > 1 and info.loader in ("gifload", "webpload") and family in ANIMATED_FAMILIES


def check_limits(info: Probe, limits: LimitsConfig) -> None:
    """413 from the header alone: too many frames, or too many pixels over all frames."""
    if info.pages > limits.max_frames:
        raise SourceTooLarge(f"{info.pages} frames is over the limit of {limits.max_frames}")
    total = info.width * info.height * info.pages
    if total > limits.max_source_pixels:
        raise SourceTooLarge(f"{info.width}x{info.height}x{info.pages} frames is over the pixel "
                             f"limit of {limits.max_source_pixels}")


def select_frames(pages: int, wanted: int) -> list[int]:
    """``wanted`` page indices spread evenly over ``pages``, the first always; 0 or too many: all."""
    if wanted <= 0 or wanted >= pages:
        return list(range(pages))
    return [i * pages // wanted for i in range(wanted)]


def stretch_delays(delays: Sequence[int], kept: Sequence[int]) -> list[int]:
    """Each kept frame lasts until the next kept one would have shown: one loop keeps its length."""
    ends = [*kept[1:], len(delays)]
    return [sum(delays[start:end]) for start, end in zip(kept, ends, strict=True)]


def read_timing(src: Source, pages: int) -> Timing:
    """Delays and loop from the header (no frame is decoded)."""
    image = pyvips.Image.new_from_source(src.vips(), "", access="sequential")
    fields = set(image.get_fields())
    delays = list(image.get("delay")) if "delay" in fields else []
    if len(delays) != pages:
        delays = (delays + [DEFAULT_DELAY] * pages)[:pages]
    return Timing(tuple(delays), image.get("loop") if "loop" in fields else 0)


def _frames(src: Source, info: Probe, options: PreviewOptions, kept: list[int],
            faces: Sequence[Face]) -> tuple[pyvips.Image, Box]:
    """The kept pages, resized and cut with one crop box, joined top to bottom."""
    todo = plan(info.width, info.height, options.sizing)
    width, height = todo.resize
    n = "-1" if len(kept) > 1 else "1"  # one frame: decode only the first page
    strip = pyvips.Image.thumbnail_source(src.vips(), width, height=height, size="force",
                                          option_string=f"n={n},fail_on=warning")
    if strip.interpretation != "srgb":
        strip = strip.colourspace("srgb")
    page = strip.get("page-height") if len(kept) > 1 else strip.height
    if todo.side:
        side = min(todo.side, strip.width, page)  # libvips may round a page a pixel off the plan
        box = place_crop(strip.width, page, side, faces, (info.width, info.height))
    else:
        box = Box(0, 0, strip.width, page)
    if len(kept) == 1 and box == Box(0, 0, strip.width, strip.height):
        return strip, box
    cuts = [strip.extract_area(box.left, i * page + box.top, box.width, box.height) for i in kept]
    return (pyvips.Image.arrayjoin(cuts, across=1) if len(cuts) > 1 else cuts[0]), box


def encode_animation(image: pyvips.Image, family: str, page_height: int, timing: Timing | None,
                     output: OutputConfig) -> Rendered:
    """GIF (gifsave, settings in render.py) or WebP; ``timing`` None means a still."""
    image = image.copy()
    for name in ("delay", "loop", "page-height", "n-pages", "gif-palette"):
        if name in image.get_fields():
            image.remove(name)
    if timing is not None:
        image.set_type(pyvips.GValue.gint_type, "page-height", page_height)
        image.set_type(pyvips.GValue.array_int_type, "delay", list(timing.delays))
        image.set_type(pyvips.GValue.gint_type, "loop", timing.loop)
    rendered = encode(image, family, output)
    return Rendered(rendered.data, rendered.format, rendered.width, page_height)


def render_animated(src: Source, info: Probe, options: PreviewOptions, limits: LimitsConfig,
                    output: OutputConfig, faces: Sequence[Face] = (), detect: FaceFinder | None = None
                    ) -> Rendered:
    """An animated render: all frames (or ``frame_number`` of a GIF's) with one crop box.

    ``faces`` are in source coordinates, found on the first frame; the box is decided once from
    them. ``frame_number=1`` gives a still of the first frame. Raises 413 before decoding frames
    that are over the limits, 415 for frames that do not decode.
    """
    family = options.format or info.family
    wanted = options.frame_number if info.loader == "gifload" else 0  # API: GIF only
    kept = select_frames(info.pages, wanted)
    try:
        if len(kept) > 1:
            check_limits(info, limits)
            timing = read_timing(src, info.pages)
            timing = Timing(tuple(stretch_delays(timing.delays, kept)), timing.loop)
        else:
            timing = None
        if detect is not None and not faces and plan(info.width, info.height, options.sizing).side:
            first = pyvips.Image.thumbnail_source(src.vips(), FIRST_FRAME_SIDE, height=FIRST_FRAME_SIDE,
                                                  size="down").copy_memory()  # page 0 only
            faces = detect(first, (info.width, info.height))
        image, box = _frames(src, info, options, kept, faces)
        return encode_animation(image, family, box.height, timing, output)
    except pyvips.Error:
        raise UnsupportedMedia("the animation cannot be decoded") from None
