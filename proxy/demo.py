"""The demo library: a few real, redistributable photos shipped in the package (``demo_photos/``,
credited in its CREDITS.md), copied in at first start. Nothing is downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

DEMO_ID = "demo"
PHOTOS = Path(__file__).parent / "demo_photos"


def samples() -> list[Path]:
    """The shipped demo files (photos and one GIF), by name."""
    return sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".gif"))


def seed_demo(folder: Path) -> int:
    """Create ``folder`` with the sample photos if it does not exist; return how many were copied."""
    if folder.exists():
        return 0
    folder.mkdir(parents=True)
    for sample in samples():
        shutil.copyfile(sample, folder / sample.name)
    return len(samples())
