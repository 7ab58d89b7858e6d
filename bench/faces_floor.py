"""What face detection alone costs next to the render the acceptance perf check compares against.

    .venv/bin/python bench/faces_floor.py [--cv-threads 1] [--model M] [PHOTO ...]

For each photo (default: the acceptance perf set, ``../shared/corpus/faces/*.jpg`` plus
``photos/sharp_*.jpg`` and ``photos/mdx_*.jpg``), in this process and one after another, as
``check_perf.py`` does:

- ``raw``: ``pyvips.Image.thumbnail_buffer(data, 200, height=200, crop="centre")`` + JPEG Q85 (best of 3);
- ``look320``: one YuNet call on a 320 px view of the photo (best of 3; the network is built and
  warmed first, and the view is made outside the timing);
- ``look640``: one YuNet call on a 640 px view, which the service adds for photos with no face
  at 320 px (``[faces] second_look``), counted only for those photos.

Every pixel operation a face-aware render does beyond ``raw`` costs more than zero, so
``1 + (look320 + look640) / raw`` is a floor for this detection (the one that keeps every labelled
face in bench/faces_quality.py; a smaller or single look is cheaper and loses faces), before any
decode for detection, HTTP, cache or file work. Whether a photo needs the second look is decided
from YuNet's rows at score 0.6, without the service's size filter. Prints one line per photo and
the totals.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pyvips
from bench_core import MODEL, best_of, corpus_photos, raw_seconds


class Looks:
    """YuNet with one network per input shape, built and warmed before it is timed."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.nets: dict[tuple[int, int], cv2.FaceDetectorYN] = {}

    def view(self, data: bytes, side: int) -> np.ndarray:
        image = pyvips.Image.thumbnail_buffer(data, side, height=side).colourspace("srgb")
        rgb = image.extract_band(0, n=3)
        array = np.ndarray(buffer=rgb.write_to_memory(), dtype=np.uint8, shape=(rgb.height, rgb.width, 3))
        return np.ascontiguousarray(array[:, :, ::-1])

    def detector(self, bgr: np.ndarray) -> Callable[[], int]:
        shape = (bgr.shape[1], bgr.shape[0])
        if shape not in self.nets:
            self.nets[shape] = cv2.FaceDetectorYN.create(self.model, "", shape, 0.6, 0.3, 50)
        net = self.nets[shape]
        net.detect(bgr)

        def run() -> int:
            _, rows = net.detect(bgr)
            return 0 if rows is None else len(rows)

        return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("photos", nargs="*", type=Path)
    parser.add_argument("--cv-threads", type=int, default=1, help="OpenCV threads (the service: 1)")
    parser.add_argument("--model", default=str(MODEL))
    args = parser.parse_args()
    cv2.setNumThreads(args.cv_threads)
    looks = Looks(args.model)
    photos = args.photos or corpus_photos()
    if not photos:
        sys.exit("no photos: pass some, or put ../shared beside the checkout")
    total_raw = total_320 = total_640 = 0.0
    print("| photo | raw ms | look 320 ms | look 640 ms | floor x |\n|---|---:|---:|---:|---:|")
    for path in photos:
        data = path.read_bytes()
        raw = raw_seconds(data)
        first = looks.detector(looks.view(data, 320))
        look320 = best_of(first)
        look640 = best_of(looks.detector(looks.view(data, 640))) if first() == 0 else 0.0
        total_raw, total_320, total_640 = total_raw + raw, total_320 + look320, total_640 + look640
        print(f"| {path.name} | {raw * 1000:.1f} | {look320 * 1000:.1f} | {look640 * 1000:.1f} | "
              f"{(raw + look320 + look640) / raw:.2f} |")
    print(f"\nTOTAL over {len(photos)} photos, OpenCV threads {args.cv_threads}: "
          f"raw {total_raw * 1000:.0f} ms; "
          f"one 320 px look {total_320 * 1000:.0f} ms = {total_320 / total_raw:.2f}x raw; "
          f"second looks {total_640 * 1000:.0f} ms = {total_640 / total_raw:.2f}x raw; "
          f"floor {1 + (total_320 + total_640) / total_raw:.2f}x raw "
          f"({1 + total_320 / total_raw:.2f}x with one look only)")


if __name__ == "__main__":
    main()
