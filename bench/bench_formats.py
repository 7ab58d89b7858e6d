"""Output formats for negotiation (issue 16): bytes, encode CPU and SSIM per format and setting, one run.

    .venv/bin/python bench/bench_formats.py [--write]

Over the acceptance perf photos (``bench_core.corpus_photos``: corpus photos/ without the 99.6 MP
one, and faces/), at ``size`` 200 and 400: each photo is made into its square thumbnail once
(libvips centre crop, kept in memory), then encoded with the service's own ``render.encode`` at
JPEG Q85 (the reference) and at a grid of WebP and AVIF settings. Per setting: mean bytes, mean
encode CPU (process time, libvips concurrency 1 as in the service) and mean SSIM of the decoded
result against the unencoded thumbnail (scikit-image ``structural_similarity``, RGB, data range
255). Then the cold render (``pipeline.render``, centre crop, size 200) of each photo to JPEG (what
negotiation off serves) and to AVIF and WebP, alternated, best of 3.
``--write`` replaces the "formats" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyvips
from bench_core import corpus_photos, write_section
from skimage.metrics import structural_similarity

from proxy import render as render_module
from proxy.config import Config, FacesConfig, OutputConfig
from proxy.pipeline import Job, render
from proxy.render import Source, encode
from proxy.request import PreviewOptions
from proxy.types import Fit, MediaKind, Sizing

SIZES = (200, 400)
SERVICE_AVIF_EFFORT = render_module.AVIF_EFFORT
# (label, family, output settings, AVIF effort): JPEG Q85 first, the reference
GRID: list[tuple[str, str, dict[str, int], int]] = [
    ("jpeg q85", "jpeg", {"jpeg_quality": 85}, 0),
    *[(f"webp q{q}", "webp", {"webp_quality": q}, 0) for q in (75, 80, 82, 85)],
    *[(f"avif q{q} effort {e}", "avif", {"avif_quality": q}, e)
      for e, qs in ((2, (60, 65, 68, 70, 75)), (1, (68,)), (4, (65, 68))) for q in qs],
]


def pixels(image: pyvips.Image) -> np.ndarray:
    if image.hasalpha():
        image = image.flatten(background=[255, 255, 255])
    image = image.colourspace("srgb").cast("uchar")
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8,
                      shape=[image.height, image.width, image.bands])


def cpu(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.process_time()
    out = fn()
    return time.process_time() - started, out


def measure(thumbs: list[tuple[pyvips.Image, np.ndarray]], family: str, settings: dict[str, int],
            effort: int) -> tuple[float, float, float]:
    """Mean bytes, mean encode CPU seconds (best of 2 each), mean SSIM over ``thumbs``."""
    output = dataclasses.replace(OutputConfig(), **settings)
    sizes, times, ssims = [], [], []
    for image, reference in thumbs:
        render_module.AVIF_EFFORT = effort  # read by encode at each call
        t1, rendered = cpu(lambda: encode(image, family, output))  # noqa: B023 - called at once
        t2, _ = cpu(lambda: encode(image, family, output))  # noqa: B023
        data = rendered.data  # type: ignore[attr-defined]
        decoded = pixels(pyvips.Image.new_from_buffer(data, ""))
        sizes.append(len(data))
        times.append(min(t1, t2))
        ssims.append(structural_similarity(reference, decoded, channel_axis=2, data_range=255))
    return statistics.mean(sizes), statistics.mean(times), statistics.mean(ssims)


def cold(photos: list[Path], family: str) -> float:
    """Sum over the photos of the best-of-3 CPU of one whole render (decode, crop, encode), size 200."""
    config = Config(faces=FacesConfig(detector="none"))
    options = PreviewOptions(sizing=Sizing(Fit.SQUARE, size=200), format=family)
    total = 0.0
    for photo in photos:
        job = Job(Source(data=photo.read_bytes()), MediaKind.IMAGE, "jpg", options)
        total += min(cpu(lambda: render(job, config))[0] for _ in range(3))  # noqa: B023
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    photos = corpus_photos()
    lines = [f"Photos: {len(photos)} (corpus photos/ without the 99.6 MP one, and faces/), square centre "
             f"crops; {os.cpu_count()} cores, libvips concurrency 1. Command: "
             "`.venv/bin/python bench/bench_formats.py`. SSIM: scikit-image `structural_similarity` of "
             "the decoded file against the unencoded thumbnail (RGB). CPU: process time of one encode, "
             "best of 2.", "",
             "| size | format, setting | mean bytes | bytes vs JPEG | encode CPU ms | CPU vs JPEG | SSIM |",
             "|---|---|---|---|---|---|---|"]
    for size in SIZES:
        thumbs = []
        for photo in photos:
            image = pyvips.Image.thumbnail(str(photo), size, height=size, crop="centre").copy_memory()
            thumbs.append((image, pixels(image)))
        ref_bytes = ref_cpu = 0.0
        for label, family, settings, effort in GRID:
            mean_bytes, mean_cpu, ssim = measure(thumbs, family, settings, effort)
            if family == "jpeg":
                ref_bytes, ref_cpu = mean_bytes, mean_cpu
            lines.append(f"| {size} | {label} | {mean_bytes:.0f} | {mean_bytes / ref_bytes:.2f} | "
                         f"{mean_cpu * 1000:.1f} | {mean_cpu / ref_cpu:.2f} | {ssim:.4f} |")
            print(lines[-1], flush=True)
    render_module.AVIF_EFFORT = SERVICE_AVIF_EFFORT
    totals = dict.fromkeys(("jpeg", "avif", "webp"), 0.0)
    for _ in range(2):  # alternated: the machine is shared, drifts hit every format alike
        for family in totals:
            totals[family] += cold(photos, family)
    lines += ["", "Cold render (decode, centre crop, encode; `pipeline.render`, size 200, detector none), "
              "CPU summed over the photos, best of 3 each, two alternated rounds, service defaults "
              f"(WebP Q{OutputConfig().webp_quality}, AVIF Q{OutputConfig().avif_quality} effort "
              f"{SERVICE_AVIF_EFFORT}):", "",
              "| negotiation | output | CPU s | ratio |", "|---|---|---|---|",
              f"| off (or a client naming neither) | JPEG | {totals['jpeg'] / 2:.2f} | 1.00 |",
              f"| on, client accepts AVIF | AVIF | {totals['avif'] / 2:.2f} | "
              f"{totals['avif'] / totals['jpeg']:.2f} |",
              f"| on, client accepts WebP only | WebP | {totals['webp'] / 2:.2f} | "
              f"{totals['webp'] / totals['jpeg']:.2f} |"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section("formats", text)


if __name__ == "__main__":
    main()
