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


async def test_warm_runs_a_fixed_pool_of_consumers_not_a_task_per_file(tmp_path: Path) -> None:
    """A big folder must not become as many tasks (and their memory) before the first render."""
    import asyncio

    from proxy.config import load_config
    from proxy.tools import warm

    media = tmp_path / "media"
    media.mkdir()
    tiny = pyvips.Image.black(8, 8, bands=3).copy(interpretation="srgb").write_to_buffer(".png")
    for n in range(60):
        (media / f"f{n}.png").write_bytes(tiny)
    config = load_config(write_config(tmp_path / "config.toml",
                                      config_raw(tmp_path, media, limits={"render_concurrency": 2})))
    lib = config.library("lib")
    assert lib is not None
    most = 0

    async def count_tasks() -> None:
        nonlocal most
        while True:
            most = max(most, len(asyncio.all_tasks()))
            await asyncio.sleep(0)

    sampler = asyncio.create_task(count_tasks())
    try:
        summary = await warm(config, lib, "-", [16], [], progress=False)
    finally:
        sampler.cancel()
    assert (summary.rendered, dict(summary.failed)) == (60, {})
    assert most < 30, most


def test_warm_of_a_multi_tenant_library_without_a_space_says_so_in_one_line(tmp_path: Path) -> None:
    media = tmp_path / "media"
    (media / "sp1").mkdir(parents=True)
    config = write_config(tmp_path / "config.toml", config_raw(
        tmp_path, media, libraries=[{"id": "mt", "origin": str(media), "secret": "s", "multi_tenant": True}]))
    result = subprocess.run([sys.executable, "-m", "proxy", "warm", "--config", str(config),
                             "--library", "mt", "--sizes", "64", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "multi-tenant" in result.stderr, result.stderr
