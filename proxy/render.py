"""The libvips pipeline for stills: probe the header, shrink on load, crop, encode. Synchronous.

Runs only inside the render executor. libvips' operation cache is off and each render uses one
libvips thread (``configure_vips``): parallelism comes from concurrent requests, one per executor
thread, which measures faster on small thumbnails than libvips' own threading and keeps memory flat.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyvips

from .config import FacesConfig, LimitsConfig, OutputConfig
from .errors import SourceTooLarge, UnsupportedMedia
from .faces import Detection, decode_size, find_faces
from .geometry import Plan, crop_box, keep_faces, oriented, plan, scale_faces
from .media import CONTENT_TYPES
from .request import PreviewOptions
from .types import Box, Face

# Loaders we serve, by libvips' own name for them; anything else (SVG, PDF, FITS, matrix, ...) is
# refused even if the file was named like an image. Output family per loader (API section 1).
LOADER_FAMILY = {
    "jpegload": "jpeg", "uhdrload": "jpeg", "pngload": "png", "gifload": "gif", "webpload": "webp",
    "heifload": "avif", "tiffload": "jpeg",
}
ALPHA_FAMILIES = frozenset({"png", "webp", "avif", "gif"})

# gifsave settings for stills and animations, measured with ``bench/bench_media.py --gif-settings``
# (9 animations at 200 px):
# effort 4 takes ~2x the encode time of effort 1 for +1.2 dB PSNR and visibly less banding; libvips'
# default effort 7 takes ~3x effort 4 again for +0.3 dB. interframe_maxerror 8 (pixels that barely
# change stay transparent in the next frame) makes files 42% smaller for -2.4 dB. dither 1.0 (the
# default) is the best after a 1 px blur, i.e. as seen, for +2% bytes over 0.5.
GIF_EFFORT = 4
# AVIF (aom) effort, measured with ``bench/bench_formats.py`` (corpus photos, sizes 200 and 400, at
# avif_quality 68): effort 4 costs 7-9x the encode CPU of effort 2 for 1-3% fewer bytes; effort 1
# saves a third of effort 2's CPU but only just reaches JPEG Q85's SSIM at 400 px.
AVIF_EFFORT = 2
GIF_DITHER = 1.0
GIF_INTERFRAME_MAXERROR = 8


# The libvips loader classes behind LOADER_FAMILY (gifload is VipsForeignLoadNsgif). Every other
# loader class this libvips build has is blocked at the libvips level too, so a file that sniffs as
# CSV, matrix, raw, SVG, PDF, .v, ... never reaches its parser whatever the file is named.
SERVED_LOADERS = frozenset({
    "VipsForeignLoadJpeg", "VipsForeignLoadUhdr", "VipsForeignLoadPng", "VipsForeignLoadNsgif",
    "VipsForeignLoadWebp", "VipsForeignLoadHeif", "VipsForeignLoadTiff",
})


def loader_classes() -> list[str]:
    """The direct subclasses of VipsForeignLoad in this libvips build (one per file format)."""
    names: list[str] = []

    def add(gtype: int, _a: object, _b: object) -> object:
        names.append(pyvips.type_name(gtype))
        return pyvips.ffi.NULL  # the C callback wants a pointer back: NULL means "go on"

    pyvips.type_map(pyvips.type_from_name("VipsForeignLoad"), add)
    return names


def configure_vips() -> None:
    """Process-wide libvips settings: no operation cache, one thread per render, only our loaders."""
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    pyvips.block_untrusted_set(True)
    for name in loader_classes():
        if name not in SERVED_LOADERS:  # blocking a class blocks its _file/_buffer/_source children
            pyvips.operation_block_set(name, True)


@dataclass(frozen=True, slots=True)
class Source:
    """An original's bytes: a local file (libvips reads it itself) or a buffer fetched over HTTP."""

    path: str | None = None
    data: bytes | None = None
    size: int = -1           # bytes, when known
    temporary: bool = False  # a spooled copy (``origin.spool``), removed after the render

    def vips(self) -> pyvips.Source:
        if self.path is not None:
            return pyvips.Source.new_from_file(self.path)
        return pyvips.Source.new_from_memory(self.data or b"")

    def read(self) -> bytes:
        if self.path is not None:
            with open(self.path, "rb") as fh:
                return fh.read()
        return self.data or b""


@dataclass(frozen=True, slots=True)
class Probe:
    """What the header says, before any pixel is decoded. ``width``/``height`` are as displayed."""

    loader: str
    width: int
    height: int
    pages: int
    family: str
    hevc: bool = False


@dataclass(frozen=True, slots=True)
class Rendered:
    data: bytes
    format: str  # jpeg, png, gif, webp, avif
    width: int
    height: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def _loader(image: pyvips.Image) -> str:
    name = image.get("vips-loader")
    for suffix in ("_source", "_buffer", "_file"):
        name = name.removesuffix(suffix)
    return name


def probe(src: Source, limits: LimitsConfig) -> Probe:
    """Read the header only; refuse unknown loaders (415) and sources over the pixel limit (413)."""
    try:
        image = pyvips.Image.new_from_source(src.vips(), "", access="sequential")
        loader = _loader(image)
        fields = set(image.get_fields())
        orientation = image.get("orientation") if "orientation" in fields else 1
        pages = image.get("n-pages") if "n-pages" in fields else 1
        hevc = "heif-compression" in fields and image.get("heif-compression") == "hevc"
    except pyvips.Error:
        raise UnsupportedMedia("the file is not an image this service can decode") from None
    family = LOADER_FAMILY.get(loader)
    if family is None:
        raise UnsupportedMedia(f"{loader.removesuffix('load') or 'this'} images are not previewed")
    if hevc:
        family = "jpeg"
    width, height = oriented(image.width, image.height, orientation)
    if width < 1 or height < 1:
        raise UnsupportedMedia("the image has no pixels")
    if width * height > limits.max_source_pixels:
        raise SourceTooLarge(f"{width}x{height} pixels is over the limit of {limits.max_source_pixels}")
    return Probe(loader=loader, width=width, height=height, pages=max(1, pages), family=family, hevc=hevc)


def _decode_hevc(src: Source) -> pyvips.Image:
    """HEVC-coded HEIC: the bundled libvips has no HEVC decoder, pillow-heif does."""
    import numpy as np
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(src.read(), convert_hdr_to_8bit=True)
        array = np.asarray(heif)
    except (ValueError, RuntimeError, OSError) as exc:
        raise UnsupportedMedia("the HEIC file cannot be decoded") from exc
    height, width = array.shape[:2]
    bands = 1 if array.ndim == 2 else array.shape[2]
    return pyvips.Image.new_from_memory(np.ascontiguousarray(array).data, width, height, bands, "uchar")


def thumbnail(src: Source, info: Probe, size: tuple[int, int]) -> pyvips.Image:
    """Decode shrunk to exactly ``size`` (shrink-on-load where the format has it), upright, sRGB."""
    width, height = size
    if info.hevc:
        image = _decode_hevc(src).thumbnail_image(width, height=height, size="force")
    else:
        # fail_on=warning: a truncated or corrupt file is an error, not a grey half-image to cache
        image = pyvips.Image.thumbnail_source(src.vips(), width, height=height, size="force",
                                              option_string="fail_on=warning")
    if image.interpretation not in ("srgb",):
        image = image.colourspace("srgb")
    return image


def encode(image: pyvips.Image, family: str, output: OutputConfig) -> Rendered:
    """Encode to ``family`` with every piece of metadata (EXIF, GPS, XMP, ICC) stripped."""
    if image.hasalpha() and family not in ALPHA_FAMILIES:
        image = image.flatten(background=[255, 255, 255])
    if image.format != "uchar":
        image = image.cast("uchar")
    match family:
        case "jpeg":
            data = image.jpegsave_buffer(Q=output.jpeg_quality, keep="none", optimize_coding=True)
        case "png":
            data = image.pngsave_buffer(compression=output.png_compression, keep="none")
        case "webp":
            data = image.webpsave_buffer(Q=output.webp_quality, keep="none")
        case "avif":
            data = image.heifsave_buffer(Q=output.avif_quality, compression="av1", effort=AVIF_EFFORT,
                                         keep="none")
        case "gif":
            # keep_duplicate_frames: cgif merges identical neighbours by default, and "every frame
            # kept" (API) is a frame count a client can check
            data = image.gifsave_buffer(keep="none", effort=GIF_EFFORT, dither=GIF_DITHER,
                                        interframe_maxerror=GIF_INTERFRAME_MAXERROR,
                                        keep_duplicate_frames=True)
        case _:
            raise ValueError(f"unknown output format {family!r}")
    return Rendered(data=data, format=family, width=image.width, height=image.height)


def place_crop(width: int, height: int, side: int, faces: Sequence[Face], source: tuple[int, int]) -> Box:
    """The ``side`` square to cut from a ``width`` x ``height`` resize of a ``source`` (width,
    height) original, placed on ``faces`` (given in the original's coordinates)."""
    resized = scale_faces(faces, source, (width, height))
    return crop_box(width, height, side, keep_faces(resized, width, height))


def finish(image: pyvips.Image, todo: Plan, faces: Sequence[Face], source: tuple[int, int], family: str,
           output: OutputConfig) -> Rendered:
    """Crop an image already resized to ``todo.resize`` (on the faces, when a square) and encode it."""
    if todo.side:
        box = place_crop(image.width, image.height, todo.side, faces, source)
        image = image.extract_area(box.left, box.top, box.width, box.height)
    return encode(image, family, output)


def render_still(src: Source, info: Probe, options: PreviewOptions, output: OutputConfig,
                 faces: Sequence[Face] = ()) -> Rendered:
    """A still render: resize per the sizing rules, crop a square on the faces (or the centre), encode.

    ``faces`` are in displayed source coordinates. Decode errors become 415 UnsupportedMedia.
    """
    todo = plan(info.width, info.height, options.sizing)
    try:
        image = thumbnail(src, info, todo.resize)
        return finish(image, todo, faces, (info.width, info.height), options.format or info.family, output)
    except pyvips.Error as exc:
        raise UnsupportedMedia(_first_line(exc)) from None


def resize_with_faces(src: Source, info: Probe, todo: Plan, faces_cfg: FacesConfig
                      ) -> tuple[pyvips.Image, Detection]:
    """Decode once at the size the face search needs (``faces.decode_size``, never smaller than the
    output), find the faces there, and resize to ``todo.resize`` from that same decode. Faces are
    returned in source coordinates."""
    big_size = decode_size(info.width, info.height, todo.resize, faces_cfg)
    # in memory: the pixels are read by the detector and again by the resize, decoded once
    big = thumbnail(src, info, big_size).copy_memory()
    detection = find_faces(big, (info.width, info.height), faces_cfg)
    image = big
    if (big.width, big.height) != todo.resize:
        image = big.thumbnail_image(todo.resize[0], height=todo.resize[1], size="force")
    return image, detection


def render_still_faces(src: Source, info: Probe, options: PreviewOptions, output: OutputConfig,
                       faces_cfg: FacesConfig, known: Sequence[Face] | None
                       ) -> tuple[Rendered, Detection | None]:
    """A still whose square crop follows the faces: ``known`` faces (from the detection cache), or
    faces found now (``resize_with_faces``); returns the detection when one ran."""
    todo = plan(info.width, info.height, options.sizing)
    if not todo.side or known is not None or faces_cfg.detector == "none":
        return render_still(src, info, options, output, known or ()), None
    try:
        image, detection = resize_with_faces(src, info, todo, faces_cfg)
        family = options.format or info.family
        rendered = finish(image, todo, detection.faces, (info.width, info.height), family, output)
    except pyvips.Error as exc:
        raise UnsupportedMedia(_first_line(exc)) from None
    return rendered, detection


_PATHS = re.compile(r"(?:/[^/\s:]+)+")


def _first_line(exc: pyvips.Error) -> str:
    """libvips' reason, first line, with file paths taken out (they are ours, not the client's)."""
    detail = [line for line in (exc.detail or "").strip().splitlines() if line.strip()]
    text = _PATHS.sub("<file>", detail[0] if detail else str(exc.message))
    return f"the file cannot be decoded: {text.strip()[:160]}"
