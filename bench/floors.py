"""The in-process floors of bench/bench_peers.py: what a render costs with no server around it.

    .venv/bin/python bench/floors.py centre|faces PATHS_FILE --threads 2 --seconds 10 [--model M]

- ``centre``: read the file, ``pyvips.Image.thumbnail_buffer(data, 200, height=200, crop="centre")``,
  JPEG Q85;
- ``faces``: read the file, decode shrunk to fit 320 px, the service's YuNet_n (one onnxruntime
  session, one thread per call) on that decode, resize the same decode to cover 200 px, cut the
  square centred on the faces (the centre without), JPEG Q85.
libvips as the service runs it (operation cache off, one libvips thread per render); ``--threads``
renders at once. Paths (one a line) are taken in turn until used up or ``--seconds`` have passed.
Prints one JSON line in loadgen.py's shape, plus this process's CPU seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadgen import percentile

from proxy.config import FacesConfig
from proxy.faces import load

SIDE = 200
DETECT = 320


def centre(path: str, _model: str) -> bytes:
    data = Path(path).read_bytes()
    image = pyvips.Image.thumbnail_buffer(data, SIDE, height=SIDE, crop="centre")
    return image.jpegsave_buffer(Q=85, keep="none")


def faces(path: str, model: str) -> bytes:
    data = Path(path).read_bytes()
    big = pyvips.Image.thumbnail_buffer(data, DETECT, height=DETECT)
    if big.bands < 3:
        big = big.colourspace("srgb")
    big = big.extract_band(0, n=3).copy_memory()
    w, h = big.width, big.height
    rgb = np.ndarray(buffer=big.write_to_memory(), dtype=np.uint8, shape=(h, w, 3))
    found = load(FacesConfig(model=model))(rgb)  # type: ignore[misc]
    rows = np.array([(f.x, f.y, f.w, f.h) for f in found]).reshape(-1, 4)
    side = min(SIDE, w, h)  # never upscaled, as the service
    scale = side / min(w, h)
    small = big.thumbnail_image(max(side, round(w * scale)), height=max(side, round(h * scale)),
                                size="force") if scale < 1 else big
    cx, cy = w / 2, h / 2
    if rows is not None and len(rows):
        cx = float(np.mean(rows[:, 0] + rows[:, 2] / 2))
        cy = float(np.mean(rows[:, 1] + rows[:, 3] / 2))
    left = min(max(0, round(cx * scale - side / 2)), small.width - side)
    top = min(max(0, round(cy * scale - side / 2)), small.height - side)
    # keep="none" as the service: an UltraHDR gain map kept through the resize fails the save
    return small.extract_area(left, top, side, side).jpegsave_buffer(Q=85, keep="none")


def run(fn: Callable[[str, str], bytes], paths: list[str], threads: int, seconds: float,
        model: str) -> dict[str, float]:
    todo = iter(paths)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        while time.perf_counter() < deadline:
            with lock:
                path = next(todo, None)
            if path is None:
                return
            started = time.perf_counter()
            try:
                fn(path, model)
            except pyvips.Error as exc:
                print(f"{path}: {exc}", file=sys.stderr)
                errors.append(path)
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"completed": len(latencies), "errors": len(errors), "wall": wall, "rate": len(latencies) / wall,
            "p50": percentile(latencies, 0.50) * 1000, "p99": percentile(latencies, 0.99) * 1000,
            "cpu": cpu, "rss": after.ru_maxrss * 1024, "client_cpu": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("centre", "faces"))
    parser.add_argument("paths", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--model", default="")
    args = parser.parse_args()
    pyvips.cache_set_max(0)
    pyvips.concurrency_set(1)
    paths = args.paths.read_text().split()
    fn = centre if args.mode == "centre" else faces
    fn(paths[0], args.model)  # warm: libvips, the codec and the model load once, outside the timing
    print(json.dumps(run(fn, paths[1:], args.threads, args.seconds, args.model)))


if __name__ == "__main__":
    main()
