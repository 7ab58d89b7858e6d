"""Face-crop quality on labelled photos: does a size=S square keep every face (or the largest face
when the group cannot fit), and does a photo with no face get the centre crop?

    .venv/bin/python bench/faces_quality.py [--size 200] [--dir ../shared/corpus/faces-dev] [--model PATH]

Photos: ../shared/corpus/faces with the boxes in bench/face_labels.json (or a folder with its own
labels.json, as faces-dev), each also pushed to each end of a canvas twice its length (so that a
centre crop misses the faces). Runs the service's own code path (probe -> resize_with_faces ->
place_crop) per setting and prints a Markdown table of hit rates.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyvips

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.config import FacesConfig, LimitsConfig  # noqa: E402
from proxy.geometry import centre_box, plan  # noqa: E402
from proxy.render import Source, place_crop, probe, resize_with_faces, thumbnail  # noqa: E402
from proxy.types import Box, Fit, Sizing  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "faces"
Label = list[tuple[float, float, float, float]]


def variants(image: pyvips.Image, faces: Label) -> list[tuple[str, pyvips.Image, Label]]:
    """The photo as is, and pushed to each end of a grey canvas twice as long (faces moved along)."""
    out = [("as is", image, faces)]
    w, h = image.width, image.height
    grey = [128] * image.bands
    for name, cw, ch, x, y in (("left", 2 * w, h, 0, 0), ("right", 2 * w, h, w, 0),
                               ("top", w, 2 * h, 0, 0), ("bottom", w, 2 * h, 0, h)):
        if (name in ("left", "right")) != (w >= h):  # push along the long side only
            continue
        canvas = image.embed(x, y, cw, ch, extend="background", background=grey)
        moved = [((fx * w + x) / cw, (fy * h + y) / ch, fw * w / cw, fh * h / ch) for fx, fy, fw, fh in faces]
        out.append((name, canvas, moved))
    return out


def inside(box: Box, face: tuple[float, float, float, float], slack: float) -> bool:
    x, y, w, h = face
    return (x >= box.left - slack and y >= box.top - slack and x + w <= box.right + slack
            and y + h <= box.bottom + slack)


def judge(box: Box, faces: Label, rw: int, rh: int, side: int) -> bool:
    if not faces:
        return box == centre_box(rw, rh, side)
    px = [(x * rw, y * rh, w * rw, h * rh) for x, y, w, h in faces]
    slack = 0.02 * side
    x0, y0 = min(f[0] for f in px), min(f[1] for f in px)
    x1, y1 = max(f[0] + f[2] for f in px), max(f[1] + f[3] for f in px)
    if x1 - x0 <= side and y1 - y0 <= side:
        return all(inside(box, f, slack) for f in px)
    largest = max(px, key=lambda f: f[2] * f[3])  # the group cannot fit: the largest face must
    return inside(box, largest, slack)


def crop_for(data: bytes, size: int, cfg: FacesConfig) -> tuple[Box, int, int, float]:
    src = Source(data=data)
    info = probe(src, LimitsConfig())
    todo = plan(info.width, info.height, Sizing(Fit.SQUARE, size=size))
    if cfg.detector == "none":
        image, faces, seconds = thumbnail(src, info, todo.resize), (), 0.0
    else:
        image, detection = resize_with_faces(src, info, todo, cfg)
        faces, seconds = detection.faces, detection.seconds
    box = place_crop(image.width, image.height, todo.side, faces, (info.width, info.height))
    return box, image.width, image.height, seconds


def labelled(folder: Path) -> list[tuple[str, Label]]:
    """(file, face boxes as fractions) of ``folder``: its labels.json (pixels, faces-dev's format)
    or, for ../shared/corpus/faces, bench/face_labels.json (fractions)."""
    if (folder / "labels.json").is_file():
        out = []
        for item in json.loads((folder / "labels.json").read_text()):
            image = pyvips.Image.new_from_file(str(folder / item["file"])).autorot()
            w, h = image.width, image.height
            out.append((item["file"], [(x / w, y / h, bw / w, bh / h) for x, y, bw, bh in item["faces"]]))
        return out
    labels = json.loads((ROOT / "bench" / "face_labels.json").read_text())["faces"]
    return [(name, [tuple(f) for f in faces]) for name, faces in sorted(labels.items())]


def cases(folder: Path) -> list[tuple[str, bytes, Label]]:
    out = []
    for name, faces in labelled(folder):
        if not (folder / name).is_file():
            continue
        image = pyvips.Image.new_from_file(str(folder / name)).autorot()
        image = image.colourspace("srgb") if image.bands < 3 else image
        image = image.flatten(background=[255, 255, 255]) if image.hasalpha() else image
        for variant, img, moved in variants(image.extract_band(0, n=3), faces):
            out.append((f"{name} ({variant})", img.jpegsave_buffer(Q=92), moved))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=CORPUS, help="photos (with labels.json, or corpus/faces)")
    parser.add_argument("--model", default="", help="a YuNet_n ONNX file (default: the one shipped)")
    parser.add_argument("--failures", action="store_true", help="list the cases each setting misses")
    args = parser.parse_args()
    all_cases = cases(args.dir)
    rows = []
    settings = [("yunet", 240), ("yunet", 0), ("none", 0)]
    for detector, second in settings:
        cfg = FacesConfig(detector=detector, model=args.model, second_look=second)
        label = f"{detector}, second look {second or 'off'}" if detector == "yunet" else "centre crop"
        hits = face_hits = face_total = noface_hits = noface_total = 0
        seconds: list[float] = []
        misses = []
        for name, data, faces in all_cases:
            box, rw, rh, dt = crop_for(data, args.size, cfg)
            seconds.append(dt)
            ok = judge(box, faces, rw, rh, min(args.size, rw, rh))
            hits += ok
            if faces:
                face_total += 1
                face_hits += ok
            else:
                noface_total += 1
                noface_hits += ok
            if not ok:
                misses.append(name)
        seconds.sort()
        rows.append((label, hits, len(all_cases), face_hits, face_total, noface_hits, noface_total,
                     seconds[len(seconds) // 2] * 1000))
        if args.failures:
            print(f"{label} misses: {misses}", file=sys.stderr)
    print(f"{args.dir.name}, size={args.size}\n"
          "| setting | all cases | with faces | no face (centre kept) | median detect ms |\n"
          "|---|---|---|---|---|")
    for d, h, n, fh, ft, nh, nt, ms in rows:
        print(f"| {d} | {h}/{n} ({100 * h / n:.0f}%) | {fh}/{ft} ({100 * fh / max(ft, 1):.0f}%) | "
              f"{nh}/{nt} | {ms:.1f} |")


if __name__ == "__main__":
    main()
