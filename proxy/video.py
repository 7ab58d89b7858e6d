"""Video covers: the first decodable frame through OpenCV's VideoCapture (the wheel's FFmpeg), then
the photo sizing and crop, as JPEG. Synchronous.

FFmpeg wants a file it can seek in (an MP4's index is often at the end), so a source fetched over
HTTP (already within ``limits.max_source_bytes``) is written to a temporary file and deleted after.
Display rotation: this OpenCV build applies the container's display matrix itself
(``CAP_PROP_ORIENTATION_AUTO`` is on by default for FFmpeg: the iPhone MOV with 180 degrees comes
out upright, a 90-degree MP4 comes out with width and height swapped); we set it explicitly so a
different default cannot turn covers upside down.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import cv2
import numpy as np
import pyvips

from .config import LimitsConfig, OutputConfig, VideoConfig
from .errors import SourceTooLarge, UnsupportedMedia
from .geometry import plan
from .render import Rendered, Source, finish
from .request import PreviewOptions
from .types import Face, FaceFinder

OPEN_TIMEOUT_MS = 10_000
READ_TIMEOUT_MS = 10_000
FIRST_FRAME_TRIES = 8      # reads tolerated before the first decodable frame (broken leading packets)
SKIP_BLACK_MS = 2_000      # video.skip_black looks this far into the video
SKIP_BLACK_FRAMES = 120    # and at most this many frames (a bogus frame rate cannot make it scan far)
BLACK_P99 = 32             # a frame whose 99th-percentile luma is below this is near-black

cv2.setNumThreads(1)  # parallelism is the render pool's size, not OpenCV's


@contextmanager
def local_file(src: Source, extension: str = "") -> Iterator[str]:
    """A path FFmpeg can open: the local original, or a temporary copy of fetched bytes."""
    if src.path is not None:
        yield src.path
        return
    fd, path = tempfile.mkstemp(prefix="preview-video-", suffix=f".{extension}" if extension else "")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(src.data or b"")
        yield path
    finally:
        os.unlink(path)


def _open(path: str, limits: LimitsConfig) -> cv2.VideoCapture:
    if os.path.getsize(path) == 0:
        raise UnsupportedMedia("the video file is empty")
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS,
        cv2.CAP_PROP_N_THREADS, 1,
    ])
    if not cap.isOpened():
        raise UnsupportedMedia("the file is not a video this service can decode")
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width < 1 or height < 1:
        cap.release()
        raise UnsupportedMedia("the video has no picture")
    if width * height > limits.max_source_pixels:
        cap.release()
        raise SourceTooLarge(f"{width}x{height} pixels is over the limit of {limits.max_source_pixels}")
    return cap


def is_near_black(frame: np.ndarray) -> bool:
    """Almost every pixel dark: a fade-in or a black leader, not a picture."""
    small = frame[:: max(1, frame.shape[0] // 90), :: max(1, frame.shape[1] // 160)]
    luma = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    return float(np.percentile(luma, 99)) < BLACK_P99


def _first(cap: cv2.VideoCapture) -> np.ndarray:
    for _ in range(FIRST_FRAME_TRIES):
        ok, frame = cap.read()
        if ok and frame is not None and frame.size:
            return frame
    raise UnsupportedMedia("the video has no decodable frame")


def _first_not_black(cap: cv2.VideoCapture, first: np.ndarray) -> np.ndarray:
    for _ in range(SKIP_BLACK_FRAMES):
        if cap.get(cv2.CAP_PROP_POS_MSEC) > SKIP_BLACK_MS:
            break
        ok, frame = cap.read()
        if not ok or frame is None:
            break
        if not is_near_black(frame):
            return frame
    return first  # black all along: the first frame is still the cover


def cover_frame(path: str, limits: LimitsConfig, skip_black: bool = False) -> np.ndarray:
    """The cover as an upright BGR array: the first decodable frame (or, with ``skip_black``, the
    first that is not near-black in the first two seconds). 415 when there is none, 413 when the
    reported size is over the pixel limit (checked before decoding)."""
    cap = _open(path, limits)
    try:
        frame = _first(cap)
        if skip_black and is_near_black(frame):
            frame = _first_not_black(cap, frame)
        return frame
    except cv2.error as exc:
        raise UnsupportedMedia("the video cannot be decoded") from exc
    finally:
        cap.release()


def to_vips(frame: np.ndarray) -> pyvips.Image:
    """A BGR (or grey) uint8 frame as an sRGB libvips image (pixels copied: the array may go)."""
    rgb = frame[:, :, 2::-1] if frame.ndim == 3 else frame
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]
    bands = rgb.shape[2] if rgb.ndim == 3 else 1
    image = pyvips.Image.new_from_memory(rgb.tobytes(), width, height, bands, "uchar")
    return image.copy(interpretation="srgb" if bands == 3 else "b-w")


def render_cover(src: Source, options: PreviewOptions, limits: LimitsConfig, output: OutputConfig,
                 video: VideoConfig, faces: Sequence[Face] = (), extension: str = "",
                 detect: FaceFinder | None = None) -> Rendered:
    """A video's cover, sized and cropped as a photo would be (faces in frame coordinates, or found
    by ``detect`` on the frame for a square); JPEG unless ``options.format`` says otherwise."""
    with local_file(src, extension) as path:
        frame = cover_frame(path, limits, video.skip_black)
    image = to_vips(frame)
    todo = plan(image.width, image.height, options.sizing)
    if todo.side and not faces and detect is not None:
        faces = detect(image, (image.width, image.height))
    try:
        if todo.resize != (image.width, image.height):
            image = image.thumbnail_image(todo.resize[0], height=todo.resize[1], size="force")
        return finish(image, todo, faces, (frame.shape[1], frame.shape[0]), options.format or "jpeg", output)
    except pyvips.Error as exc:
        raise UnsupportedMedia("the video frame cannot be encoded") from exc
