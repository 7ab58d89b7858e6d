"""The demo library: real photos from scikit-image's bundled data, copied in at first start.

Nothing is downloaded: scikit-image ships these files inside its wheel.
"""

from __future__ import annotations

import shutil
from pathlib import Path

DEMO_ID = "demo"
# scikit-image's bundled colour photos (public domain or CC0 per its data docs) and one GIF
SAMPLES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
           "hubble_deep_field.jpg", "ihc.png", "camera.png", "retina.jpg", "no_time_for_that_tiny.gif")


def seed_demo(folder: Path) -> int:
    """Create ``folder`` with the sample photos if it does not exist; return how many were copied."""
    if folder.exists():
        return 0
    import skimage

    data = Path(skimage.__file__).parent / "data"
    folder.mkdir(parents=True)
    copied = 0
    for name in SAMPLES:
        if (data / name).is_file():
            shutil.copyfile(data / name, folder / name)
            copied += 1
    return copied
