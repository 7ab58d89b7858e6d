"""``preview-proxy warm`` on files that cannot be rendered: each reported once, with one reason, and no
libvips chatter on stderr (the typed error says it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyvips
from conftest import config_raw, write_config


def test_a_truncated_file_is_one_failure_with_one_reason_and_no_stray_lines(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    noise = pyvips.Image.gaussnoise(900, 700).cast("uchar")
    noise = noise.bandjoin([noise, noise]).copy(interpretation="srgb")
    for name, save in (("photo.jpg", ".jpg[Q=90]"), ("drawing.png", ".png")):
        data = noise.write_to_buffer(save)
        (media / f"whole-{name}").write_bytes(data)
        (media / f"cut-{name}").write_bytes(data[: len(data) // 2])  # truncated: the header reads fine
    raw = config_raw(tmp_path, media, limits={"render_concurrency": 2})
    config = write_config(tmp_path / "config.toml", raw)
    # a real process: libvips' messages reach the real stderr, as an operator sees them
    result = subprocess.run([sys.executable, "-m", "proxy", "warm", "--config", str(config), "--library",
                             "lib", "--sizes", "64,128,256", "--quiet"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 1
    assert "VIPS" not in result.stderr, result.stderr
    assert "rendered 6, skipped 0 (already cached), failed 2 files" in result.stdout, result.stdout
    reasons = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert len(reasons) in (1, 2) and sum(int(line.split(" x ")[0]) for line in reasons) == 2, reasons
    assert all("UnsupportedMedia" in line for line in reasons), reasons
