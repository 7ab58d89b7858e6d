"""Face detection: where the faces are in a decoded photo. Synchronous; runs on render threads.

The detector is YuNet_n (libfacedetection.train, Apache-2.0, 74k parameters, ``proxy/models``) on
onnxruntime: one ``InferenceSession`` per process, shared by every render thread (a session is
thread-safe and takes any input size), one intra-op thread, so parallelism comes from the render
threads as for libvips. The network gives raw heads per stride; ``decode`` turns them into boxes,
and ``nms`` removes the overlaps. Candidates are capped after NMS, never before (a crowd of more
than 50 faces keeps its faces).

``find_faces`` is the whole search, and the only thing the renderers call: a first look at a view
whose long side is ``FIRST_LOOK``; only when it keeps no face, a second look on a view whose SHORT
side is ``[faces] second_look`` (the side a square crop keeps, so a face on a wide canvas is as large
there as on a plain photo), long side capped at ``SECOND_LOOK_CAP``. ``decode_size`` says how large
the renderer must decode a photo so that both looks and the output come from one decode.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyvips

from .config import FacesConfig
from .geometry import keep_faces, scale_faces
from .types import Face

log = logging.getLogger("proxy.faces")
cv2.setNumThreads(1)  # parallelism is the render pool's size, not OpenCV's

MODEL_DIR = Path(__file__).parent / "models"
MODEL_NAME = "face_detection_yunet_n_dynamic.onnx"
# Chosen with bench/faces_quality.py on ../shared/corpus/faces and faces-dev (RESULTS.md "faces").
FIRST_LOOK = 320        # long side of the first view
SECOND_LOOK_CAP = 960   # the second view's long side at most (a 4:1 panorama: 960 x 240)
# A view may be up to this much larger than the decode it is made from: a size=200 square's own
# decode then serves the first look of most photos, and the look costs no decode of its own.
UPSCALE = 1.25
SCORE = 0.6             # candidates below this are dropped before NMS; geometry.keep_faces decides after
NMS_IOU = 0.3
MAX_FACES = 200         # after NMS
STRIDES = (8, 16, 32)   # YuNet's heads; the input must be a multiple of the largest


class FaceModelError(Exception):
    """The face model cannot be loaded: the message names the file and the reason (one line)."""


@dataclass(frozen=True, slots=True)
class Detection:
    faces: tuple[Face, ...]
    detector: str
    seconds: float
    failed: bool = False


def model_path(cfg: FacesConfig) -> Path:
    """The model file ``cfg`` selects: ``[faces] model``, else the one shipped in the package."""
    return Path(cfg.model) if cfg.model else MODEL_DIR / MODEL_NAME


def detector_name(cfg: FacesConfig) -> str:
    """Which detector ``cfg`` selects: "yunet" or "none"."""
    return "none" if cfg.detector == "none" else "yunet"


def detector_id(cfg: FacesConfig) -> str:
    """What the face boxes and the crops depend on: the model file's bytes and the search's settings.
    Part of the face store's keys and of the render settings, so another model (or another search)
    neither reuses old boxes nor serves old crops."""
    if detector_name(cfg) == "none":
        return "none"
    digest = hashlib.sha256(model_path(cfg).read_bytes()).hexdigest()[:12]
    return f"yunet_n-{digest}-{FIRST_LOOK}-{cfg.second_look}"


class YuNet:
    """YuNet_n on one onnxruntime session: RGB uint8 pixels in, faces in those pixels' coordinates out."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # its warnings about unused initialisers are not ours to act on
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a missing, truncated or bad file
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise FaceModelError(f"[faces] model: cannot load {path}: {reason[:200]}") from None
        names = {o.name for o in self._session.get_outputs()}
        wanted = {f"{head}_{s}" for head in ("cls", "obj", "bbox", "kps") for s in STRIDES}
        if not wanted <= names or len(self._session.get_inputs()) != 1:
            raise FaceModelError(f"[faces] model: {path} is not a YuNet model with raw heads "
                                 f"(outputs {sorted(wanted - names)[:3]} missing)")
        self._input = self._session.get_inputs()[0].name
        self._outputs = [o.name for o in self._session.get_outputs()]  # asked once, not per photo

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        step = STRIDES[-1]
        padded_h, padded_w = -(-height // step) * step, -(-width // step) * step
        blob = np.zeros((1, 3, padded_h, padded_w), np.float32)  # zeros below and right: no face there
        blob[0, :, :height, :width] = rgb.transpose(2, 0, 1)[::-1]  # YuNet was trained on BGR
        heads = dict(zip(self._outputs, self._session.run(self._outputs, {self._input: blob}), strict=True))
        kept = nms(decode(heads, padded_w, SCORE), NMS_IOU)[:MAX_FACES]
        return [Face(*map(float, row)) for row in kept if row[0] < width and row[1] < height]


def decode(heads: dict[str, np.ndarray], width: int, threshold: float) -> np.ndarray:
    """Boxes (rows of x, y, w, h, score) from YuNet's raw heads for an input ``width`` pixels wide:
    one prior per cell of each stride's grid, score = sqrt(cls * obj), centre offset in cells, size
    as log of cells."""
    rows = [np.empty((0, 5))]
    for stride in STRIDES:
        cols = width // stride
        cls = np.clip(heads[f"cls_{stride}"][0, :, 0], 0.0, 1.0)
        obj = np.clip(heads[f"obj_{stride}"][0, :, 0], 0.0, 1.0)
        score = np.sqrt(cls * obj)
        cells = np.flatnonzero(score >= threshold)
        box = heads[f"bbox_{stride}"][0, cells].astype(np.float64)
        w, h = np.exp(box[:, 2]) * stride, np.exp(box[:, 3]) * stride
        x = (cells % cols + box[:, 0]) * stride - w / 2
        y = (cells // cols + box[:, 1]) * stride - h / 2
        rows.append(np.column_stack((x, y, w, h, score[cells])))
    return np.concatenate(rows)


def nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression over rows of x, y, w, h, score: best score first, dropping
    the boxes that overlap a kept one by more than ``iou``. Vectorised: a face has dozens of
    overlapping candidates."""
    x0, y0, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    x1, y1, area = x0 + w, y0 + h, w * h
    order = np.argsort(-boxes[:, 4], kind="stable")
    kept: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        inter = (np.clip(np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]), 0, None)
                 * np.clip(np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]), 0, None))
        order = rest[inter / (area[best] + area[rest] - inter) <= iou]
    return boxes[kept]


_lock = threading.Lock()
_detectors: dict[Path, YuNet] = {}


def load(cfg: FacesConfig) -> YuNet | None:
    """The process's detector for ``cfg`` (loaded once); None when detection is off.
    Raises FaceModelError: call it at start-up, so a bad model stops the service there."""
    if detector_name(cfg) == "none":
        return None
    path = model_path(cfg)
    with _lock:
        if path not in _detectors:
            _detectors[path] = YuNet(path)
        return _detectors[path]


def _looks(width: int, height: int, cfg: FacesConfig) -> list[float]:
    """The scale of each look's view of a ``width`` x ``height`` image: the second only where it
    is larger than the first (a 4:3 photo's 320 x 240 is both)."""
    first = FIRST_LOOK / max(width, height)
    second = min(cfg.second_look / min(width, height), SECOND_LOOK_CAP / max(width, height))
    return [first, second] if second > first * 1.15 else [first]


def decode_size(width: int, height: int, output: tuple[int, int], cfg: FacesConfig) -> tuple[int, int]:
    """The size to decode a ``width`` x ``height`` photo at (upright) for ``find_faces`` and an
    ``output`` resize from the same pixels: the output size when the looks' views are at most
    ``UPSCALE`` times it (a size=200 square of a 4:3 photo: 267 x 200 for a 320 x 240 view), else
    as large as the views need. Never larger than the photo."""
    factor = max(output[0] / width, output[1] / height, max(_looks(width, height, cfg)) / UPSCALE)
    factor = min(1.0, factor)
    return max(1, round(width * factor)), max(1, round(height * factor))


def _view(rgb: np.ndarray, scale: float) -> np.ndarray:
    """``rgb`` resized by ``scale`` for the detector (OpenCV: a few hundred microseconds where a
    libvips call on so small an image costs milliseconds; the view's sharpness does not matter)."""
    if abs(scale - 1.0) < 0.02:
        return rgb
    height, width = rgb.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def rgb_array(image: pyvips.Image) -> np.ndarray:
    """A decoded image as a height x width x 3 RGB uint8 array (alpha flattened on white)."""
    # each pyvips call costs as much as a small view's pixels: only the ones this image needs
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    if image.bands < 3:
        image = image.colourspace("srgb")
    if image.bands != 3:
        image = image.extract_band(0, n=3)
    if image.format != "uchar":
        image = image.cast("uchar")
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, 3))


def find_faces(image: pyvips.Image, source: tuple[int, int], cfg: FacesConfig) -> Detection:
    """Faces in a decoded image (a photo's detection decode, a video frame, a GIF's first frame),
    in the coordinates of the ``source`` (width, height) it was decoded from.

    Never raises: a failing detector gives no faces and ``failed=True`` (the crop falls back to the
    centre; the caller counts it and backs off).
    """
    started = time.perf_counter()
    name = detector_name(cfg)
    if name == "none":
        return Detection((), name, 0.0)
    found: list[Face] = []
    try:
        detector = load(cfg)
        assert detector is not None
        pixels = rgb_array(image)
        for scale in _looks(image.width, image.height, cfg):
            view = _view(pixels, min(scale, UPSCALE))
            found = scale_faces(detector(view), (view.shape[1], view.shape[0]), (image.width, image.height))
            if keep_faces(found, image.width, image.height):
                break
    except Exception as exc:  # onnxruntime, libvips or numpy on one odd photo: degrade, never fail
        log.warning('{"event": "face_detection_failed", "detector": "%s", "error": "%s", "crop": "centre"}',
                    name, type(exc).__name__)
        return Detection((), name, time.perf_counter() - started, failed=True)
    faces = tuple(scale_faces(found, (image.width, image.height), source))
    return Detection(faces, name, time.perf_counter() - started)


def warm_up(cfg: FacesConfig) -> None:
    """Run the detector once on each look's shape, so the first requests do not pay for
    onnxruntime's first-run allocations."""
    detector = load(cfg)
    if detector is None:
        return
    for width, height in ((FIRST_LOOK, FIRST_LOOK * 3 // 4), (FIRST_LOOK * 3 // 2, FIRST_LOOK * 3 // 4)):
        detector(np.zeros((height, width, 3), np.uint8))

