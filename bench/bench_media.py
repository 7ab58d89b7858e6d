"""Animated GIF and video cover renders: our pipeline against raw pyvips / OpenCV doing the same work.

    .venv/bin/python bench/bench_media.py                  # the Markdown table for bench/RESULTS.md
    .venv/bin/python bench/bench_media.py --gif-settings   # gifsave settings: size, time, PSNR

Everything runs in this process, one thread, libvips configured as the service configures it.
Inputs are generated (a 100-frame GIF, a 1080p mp4v MP4), so it runs from a bare clone; the
settings sweep adds ../shared/corpus/animated when present.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyvips

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.config import Config, FacesConfig
from proxy.pipeline import Job, render
from proxy.render import Source as Src
from proxy.render import configure_vips
from proxy.request import PreviewOptions
from proxy.types import Fit, MediaKind, Sizing

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "animated"
CONFIG = replace(Config(), faces=FacesConfig(detector="none"))


def moving_frames(n: int, width: int, height: int) -> list[np.ndarray]:
    """Frames of a gradient with a disc moving across it: colour ramps and motion, like real GIFs."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, 1)
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(n):
        cx, cy = width * (i + 0.5) / n, height / 2 + height / 4 * np.sin(i / 5)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (height / 6) ** 2
        rgb = np.dstack([x, y, (x + y + 5 * i) % 256]).astype(np.uint8)
        rgb[disc] = (255, 230, 40)
        frames.append(rgb)
    return frames


def write_gif(path: Path, frames: list[np.ndarray], delay: int) -> None:
    strip = pyvips.Image.new_from_array(np.vstack(frames)).copy(interpretation="srgb")
    strip.set_type(pyvips.GValue.gint_type, "page-height", frames[0].shape[0])
    strip.set_type(pyvips.GValue.array_int_type, "delay", [delay] * len(frames))
    strip.set_type(pyvips.GValue.gint_type, "loop", 0)
    strip.gifsave(str(path), keep_duplicate_frames=True)


def write_mp4(path: Path, width: int, height: int, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (width, height))
    for rgb in moving_frames(frames, width, height):
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    fn()  # warm: imports, codec initialisation
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), out


def ours(path: Path, kind: MediaKind, ext: str, sizing: Sizing) -> Callable[[], bytes]:
    job = Job(Src(path=str(path)), kind, ext, PreviewOptions(sizing=sizing))
    return lambda: render(job, CONFIG).rendered.data


def raw_gif(path: Path, side: int) -> Callable[[], bytes]:
    """The same work in plain pyvips: resize every page, cut the centre square, join, gifsave."""
    def run() -> bytes:
        head = pyvips.Image.new_from_file(str(path))
        w, h = head.width, head.height
        f = side / min(w, h)
        rw, rh = max(side, round(w * f)), max(side, round(h * f))
        strip = pyvips.Image.thumbnail(f"{path}[n=-1]", rw, height=rh, size="force")
        left, top = (rw - side) // 2, (rh - side) // 2
        pages = [strip.extract_area(left, i * rh + top, side, side) for i in range(strip.get("n-pages"))]
        out = pyvips.Image.arrayjoin(pages, across=1).copy()
        out.set_type(pyvips.GValue.gint_type, "page-height", side)
        return out.gifsave_buffer(keep="none", effort=4, interframe_maxerror=8, keep_duplicate_frames=True)
    return run


def raw_cover(path: Path, side: int) -> Callable[[], bytes]:
    """The same work with OpenCV and pyvips directly: first frame, thumbnail with a centre crop."""
    def run() -> bytes:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        _, frame = cap.read()
        cap.release()
        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        image = pyvips.Image.new_from_memory(rgb.tobytes(), rgb.shape[1], rgb.shape[0], 3, "uchar")
        if side:
            image = image.thumbnail_image(side, height=side, crop="centre")
        return image.jpegsave_buffer(Q=85, keep="none", optimize_coding=True)
    return run


def main_table(repeat: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        gif = Path(tmp) / "anim100.gif"
        write_gif(gif, moving_frames(100, 480, 360), 40)
        mp4 = Path(tmp) / "clip1080.mp4"
        write_mp4(mp4, 1920, 1080, 30)
        cases = [
            ("100-frame GIF 480x360 -> size=200", ours(gif, MediaKind.IMAGE, "gif", Sizing(Fit.SQUARE, 200)),
             raw_gif(gif, 200), "pyvips thumbnail+crop+gifsave"),
            ("1080p MP4 cover -> size=200", ours(mp4, MediaKind.VIDEO, "mp4", Sizing(Fit.SQUARE, 200)),
             raw_cover(mp4, 200), "cv2 read + pyvips thumbnail"),
            ("1080p MP4 cover, original size", ours(mp4, MediaKind.VIDEO, "mp4", Sizing()),
             raw_cover(mp4, 0), "cv2 read + pyvips jpegsave"),
        ]
        for name, mine, raw, raw_name in cases:
            t_ours, out_ours = timed(mine, repeat)
            t_raw, out_raw = timed(raw, repeat)
            rows.append((name, t_ours, len(out_ours), raw_name, t_raw, len(out_raw)))  # type: ignore[arg-type]
    print(f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}, OpenCV {cv2.__version__}, "
          f"median of {repeat}, one thread\n")
    print("| case | ours ms | ours bytes | raw | raw ms | raw bytes | ratio |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for name, t1, b1, raw_name, t2, b2 in rows:
        print(f"| {name} | {t1:.1f} | {b1} | {raw_name} | {t2:.1f} | {b2} | {t1 / t2:.2f} |")


# ---- gifsave settings ---------------------------------------------------------------------------


def _rgb(image: pyvips.Image) -> np.ndarray:
    if image.hasalpha():
        image = image.flatten(background=[128, 128, 128])
    return np.ndarray(buffer=image.cast("uchar").write_to_memory(), dtype=np.uint8,
                      shape=(image.height, image.width, image.bands))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float32) - b.astype(np.float32)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def gif_settings(repeat: int) -> None:
    """Bytes, encode ms and quality per gifsave setting over the 200 px renders of several GIFs.

    PSNR punishes dither (it is noise, pixel by pixel); "blurred PSNR" compares after a 1 px
    Gaussian, roughly what the eye does at viewing distance, where dither wins over banding."""
    with tempfile.TemporaryDirectory() as tmp:
        sources = sorted(CORPUS.glob("*.gif")) if CORPUS.is_dir() else []
        gen = Path(tmp) / "generated.gif"
        write_gif(gen, moving_frames(40, 480, 360), 40)
        strips = []
        for path in [gen, *sources]:
            strip = pyvips.Image.thumbnail(f"{path}[n=-1]", 200, height=200, size="force").copy_memory()
            if strip.get("n-pages") >= 6:
                strips.append(strip)
        settings = [dict(effort=e, dither=d, interframe_maxerror=m)
                    for e in (1, 4, 7) for d in (0.0, 0.5, 1.0) for m in (0, 8)]
        print(f"{len(strips)} animations (generated + corpus with >= 6 frames) at 200 px, "
              f"median of {repeat}\n")
        print("| effort | dither | interframe_maxerror | total KB | encode ms | PSNR dB "
              "| blurred PSNR dB |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for kw in settings:
            size = ms = 0.0
            psnr, bpsnr = [], []
            for strip in strips:
                t, data = timed(lambda s=strip, k=kw: s.gifsave_buffer(keep_duplicate_frames=True, **k),
                                repeat)
                ms += t
                size += len(data)  # type: ignore[arg-type]
                back = _rgb(pyvips.Image.new_from_buffer(data, "", n=-1))
                ref = _rgb(strip)
                psnr.append(_psnr(back, ref))
                bpsnr.append(_psnr(cv2.GaussianBlur(back, (0, 0), 1), cv2.GaussianBlur(ref, (0, 0), 1)))
            print(f"| {kw['effort']} | {kw['dither']} | {kw['interframe_maxerror']} | {size / 1024:.0f} | "
                  f"{ms:.0f} | {statistics.mean(psnr):.2f} | {statistics.mean(bpsnr):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gif-settings", action="store_true", help="sweep gifsave settings instead")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    configure_vips()
    cv2.setNumThreads(1)
    if args.gif_settings:
        gif_settings(max(1, args.repeat // 2))
    else:
        main_table(args.repeat)


if __name__ == "__main__":
    main()
