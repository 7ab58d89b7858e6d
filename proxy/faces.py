"""Face detection: pixels in, face boxes with scores out. Synchronous; runs on render threads only.

Two detectors behind one function, ``detect``:
- YuNet (``cv2.FaceDetectorYN``, a 230 KB ONNX model) when a model file is configured or found:
  accurate on small, turned and partly hidden faces, a few ms on a 320 px image.
- OpenCV's Haar cascades (frontal, then profile) from the opencv-python-headless wheel, so a bare
  install still finds faces; slower and less sure, so it is held to stricter settings.
Neither is safe to share between threads: each render thread builds its own instance, once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import FacesConfig
from .types import Face

log = logging.getLogger("proxy.faces")

# Where "auto" looks for a YuNet model when none is configured (the Docker image puts it in the first).
MODEL_NAME = "face_detection_yunet_2023mar.onnx"
MODEL_SEARCH = (Path("/opt/preview-proxy/models"), Path("models"))
YUNET_SCORE = 0.6    # YuNet's own threshold; geometry.keep_faces applies the product's rule after it
YUNET_NMS = 0.3
HAAR_MIN_NEIGHBOURS = 5  # stricter than the default 3 (a false face pulls the crop); 6 loses real ones
MAX_FACES = 50
# Long sides of the views each detector looks at, in turn, until one finds a face; chosen with
# bench/faces_quality.py. YuNet at 320 px finds most faces in ~5-8 ms; the faces it misses there
# (small, turned, far from the centre) it finds on a second look at 640 px (every labelled face;
# 94% at 480, 85% with no second look) for ~4x the time, paid only by photos with no face found
# at 320 (``[faces] second_look``). Haar does better at 320 than at 640 (fewer false faces in
# texture) and costs ~100 ms there, twice that at 640.
FIRST_LOOK = 320


@dataclass(frozen=True, slots=True)
class Detection:
    faces: tuple[Face, ...]
    detector: str
    seconds: float
    failed: bool = False


def find_model(configured: str) -> str:
    """The YuNet model to use: the configured path, else the first one found in MODEL_SEARCH."""
    if configured:
        return configured
    for folder in MODEL_SEARCH:
        if (folder / MODEL_NAME).is_file():
            return str(folder / MODEL_NAME)
    return ""


def detector_name(cfg: FacesConfig) -> str:
    """Which detector ``cfg`` selects on this machine: "yunet", "haar" or "none"."""
    if cfg.detector == "auto":
        return "yunet" if find_model(cfg.model) else "haar"
    return cfg.detector


def detect_sides(cfg: FacesConfig) -> tuple[int, ...]:
    if detector_name(cfg) == "yunet" and cfg.second_look:
        return FIRST_LOOK, cfg.second_look
    return (FIRST_LOOK,)


def padded_shape(width: int, height: int, sides: tuple[int, ...]) -> tuple[int, int]:
    """The input shape YuNet runs a ``width`` x ``height`` view at: the smallest of the view
    ``sides`` that holds it, padded (black, below and right) to a grid of a quarter of that side.
    Every view ``faces_in`` makes then lands on one of 7 shapes per side (``grid``); a view larger
    than every side gets a shape of its own."""
    long_side = max(width, height)
    side = next((s for s in sorted(sides) if s >= long_side), long_side)
    step = max(1, side // 4)

    def pad(n: int) -> int:
        return min(side, -(-n // step) * step)

    return (side, pad(height)) if width >= height else (pad(width), side)


def grid(side: int) -> set[tuple[int, int]]:
    """Every shape ``padded_shape`` gives for views that ``side`` holds."""
    return {shape for short in range(1, side + 1) for shape in
            (padded_shape(side, short, (side,)), padded_shape(short, side, (side,)))}


class _Yunet:
    """YuNet with one network per input shape. Changing a network's input size re-allocates it
    (~15 ms, as much as a detection), and every photo has its own shape: so views are padded onto
    the few shapes of ``grid`` (7 per view size), each with a network kept for the thread's life.
    A network's first ``detect`` allocates its buffers (~2.5x the time of a later one; ~5 MiB per
    320 px shape, ~14 MiB per 640 px one). ``warm_up`` runs every network once at start: the first
    requests do not pay for it (+0.25x on the acceptance perf photos when the second look's were
    left to first use), and the ~130 MiB per render thread they hold, which a library of photos
    with and without faces reaches anyway, is there from the start rather than a surprise later."""

    name = "yunet"

    def __init__(self, model: str, sides: tuple[int, ...]) -> None:
        self._model = model
        self._sides = sides
        self._nets: dict[tuple[int, int], Any] = {}

    def _net(self, shape: tuple[int, int]) -> Any:
        net = self._nets.get(shape)
        if net is None:
            import cv2

            net = cv2.FaceDetectorYN.create(self._model, "", shape, YUNET_SCORE, YUNET_NMS, MAX_FACES)
            if max(shape) <= max(self._sides):  # a grid shape; any other is used once, not kept
                self._nets[shape] = net
        return net

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        height, width = rgb.shape[:2]
        padded = padded_shape(width, height, self._sides)
        bgr = np.zeros((padded[1], padded[0], 3), np.uint8)  # black below and right: no face there
        bgr[:height, :width] = rgb[:, :, ::-1]  # YuNet wants BGR
        _, rows = self._net(padded).detect(bgr)
        if rows is None:
            return []
        return [Face(float(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[14])) for r in rows]

    def warm_up(self) -> None:
        for side in self._sides:
            for width, height in grid(side):
                self._net((width, height)).detect(np.zeros((height, width, 3), np.uint8))


class _Haar:
    name = "haar"

    def __init__(self) -> None:
        import cv2

        base = cv2.data.haarcascades
        self._frontal = cv2.CascadeClassifier(os.path.join(base, "haarcascade_frontalface_default.xml"))
        self._profile = cv2.CascadeClassifier(os.path.join(base, "haarcascade_profileface.xml"))

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        import cv2

        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        smallest = max(20, min(gray.shape) // 16)
        found: list[Face] = []
        for cascade, flip in ((self._frontal, False), (self._profile, False), (self._profile, True)):
            img = gray[:, ::-1] if flip else gray  # the profile cascade only knows faces turned one way
            boxes = cascade.detectMultiScale(img, scaleFactor=1.1, minNeighbors=HAAR_MIN_NEIGHBOURS,
                                             minSize=(smallest, smallest))
            for x, y, w, h in boxes if len(boxes) else []:
                left = gray.shape[1] - x - w if flip else x
                found.append(Face(float(left), float(y), float(w), float(h), 0.9))
            if found:  # frontal faces are the surer answer; profiles only when there is none
                break
        return found[:MAX_FACES]


_local = threading.local()


def _instance(cfg: FacesConfig) -> _Yunet | _Haar | None:
    """This thread's detector for ``cfg`` (built on first use, then reused)."""
    key = (cfg.detector, cfg.model, cfg.second_look)
    cached = getattr(_local, "detector", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    import cv2

    cv2.setNumThreads(1)  # parallelism comes from the render threads, not from OpenCV
    name = detector_name(cfg)
    instance: _Yunet | _Haar | None = None
    if name == "yunet":
        instance = _Yunet(find_model(cfg.model), detect_sides(cfg))
    elif name == "haar":
        instance = _Haar()
    _local.detector = (key, instance)
    return instance


def warm_up(cfg: FacesConfig) -> None:
    """Make this thread's detector ready (the model loaded, YuNet's networks built and run once):
    at start-up, so that the first requests do not pay for it."""
    try:
        instance = _instance(cfg)
        if isinstance(instance, _Yunet):
            instance.warm_up()
    except Exception as exc:  # a broken model: every detection will fall back to the centre (logged)
        log.warning('{"event": "face_detector_unavailable", "detector": "%s", "error": "%s"}',
                    cfg.detector, type(exc).__name__)


def detect(rgb: np.ndarray, cfg: FacesConfig) -> Detection:
    """Faces in an RGB uint8 image (height x width x 3), in its own pixel coordinates.

    Never raises: a failing detector gives no faces and ``failed=True`` (the crop falls back to the
    centre; the caller logs it and counts it).
    """
    started = time.perf_counter()
    name = "none"
    try:
        instance = _instance(cfg)
        if instance is None:
            return Detection((), "none", 0.0)
        name = instance.name
        faces = tuple(instance(rgb))
        return Detection(faces, name, time.perf_counter() - started)
    except Exception as exc:  # cv2.error, a bad model file, ...: degrade, never fail the render
        log.warning('{"event": "face_detection_failed", "detector": "%s", "error": "%s", "crop": "centre"}',
                    name, type(exc).__name__)
        return Detection((), name, time.perf_counter() - started, failed=True)
