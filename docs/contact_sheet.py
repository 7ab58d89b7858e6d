"""Make docs/contact-sheet.jpg: originals with their faces and chosen square, beside the size=200 render.

    .venv/bin/python docs/contact_sheet.py [--model PATH]

Uses the service's own code (the face debug view and the still pipeline). Photos: scikit-image's
astronaut, plus corpus face photos when ../shared/corpus is present.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyvips

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.config import FacesConfig, LimitsConfig, OutputConfig  # noqa: E402
from proxy.debug import render_debug  # noqa: E402
from proxy.render import Source, probe, render_still_faces  # noqa: E402
from proxy.request import PreviewOptions  # noqa: E402
from proxy.types import Fit, Sizing  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "faces"
PICKS = ["facerec_two_people.jpg", "smartcrop_500px_65131509.jpg", "smartcrop_flickr_goodtimes.jpg",
         "smartcrop_500px_23018877.jpg", "noface_moviepy_vacation_2017.jpg"]
ROW_HEIGHT = 220


def photos() -> list[Path]:
    demo = ROOT / "proxy" / "demo_photos"
    found = [demo / name for name in ("astronaut.jpg", "launch-day.jpg", "vezina.jpg")]
    found += [CORPUS / name for name in PICKS if (CORPUS / name).is_file()]
    return found


def row(path: Path, faces: FacesConfig) -> pyvips.Image:
    src = Source(path=str(path))
    info = probe(src, LimitsConfig())
    options = PreviewOptions(Sizing(Fit.SQUARE, 200), format="jpeg")
    debug = pyvips.Image.new_from_buffer(render_debug(src, info, options, OutputConfig(), faces).data, "")
    crop = pyvips.Image.new_from_buffer(
        render_still_faces(src, info, options, OutputConfig(), faces, None)[0].data, "")
    debug = debug.resize(ROW_HEIGHT / debug.height)
    crop = crop.resize(ROW_HEIGHT / crop.height)
    return debug.join(crop, "horizontal", shim=8, background=[255, 255, 255])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="", help="a YuNet_n-style ONNX model (default: the shipped one)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "contact-sheet.jpg"))
    args = parser.parse_args()
    faces = FacesConfig(model=args.model)
    rows = [row(p, faces) for p in photos()]
    sheet = pyvips.Image.arrayjoin(rows, across=2, shim=16, background=[255, 255, 255], halign="low")
    sheet = sheet.embed(16, 16, sheet.width + 32, sheet.height + 32, extend="white")
    sheet.jpegsave(args.out, Q=82, keep="none")
    print(f"{args.out}: {len(rows)} photos, detector {faces.detector}")


if __name__ == "__main__":
    main()
