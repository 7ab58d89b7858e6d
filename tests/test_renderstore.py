"""The shared render store (``[render_store]``) against a real SeaweedFS: a render made on host A is
not made again on host B, whose own cache folder is empty; a store that fails costs only renders."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyvips
from aiohttp.test_utils import TestClient
from conftest import asset_file, config_raw, free_port

from proxy.app import create_app
from proxy.config import build_config


async def host(aiohttp_client: Any, root: Path, media: Path, store: dict[str, Any]) -> TestClient:
    return await aiohttp_client(create_app(build_config(config_raw(root, media, render_store=store))))


async def renders_made(client: TestClient) -> float:
    text = await (await client.get("/metrics")).text()
    return sum(float(v) for v in re.findall(r'preview_render_seconds_count\{kind="\w+"\} ([\d.]+)', text))


async def test_a_render_made_on_one_host_is_not_made_again_on_another(
        aiohttp_client: Any, media: Path, tmp_path: Path, seaweedfs: Any, s3_bucket: str) -> None:
    store = {"url": f"s3://{s3_bucket}/renders", **seaweedfs.s3_table()}
    a = await host(aiohttp_client, tmp_path / "a", media, store)
    b = await host(aiohttp_client, tmp_path / "b", media, store)
    resp = await a.get("/api/v1/file/lib/-/landscape.jpg?preview&size=80", allow_redirects=False)
    assert resp.status == 302 and await renders_made(a) == 1
    loc = resp.headers["Location"]
    assert not asset_file(tmp_path / "b" / "cache", loc).exists()
    asset = await b.get(loc)  # B has never seen it: downloaded from the store, not rendered
    assert asset.status == 200 and asset.headers["Cache-Control"].endswith("immutable")
    assert pyvips.Image.new_from_buffer(await asset.read(), "").width == 80
    assert await renders_made(b) == 0
    assert asset_file(tmp_path / "b" / "cache", loc).exists()  # and kept on B's disk for its nginx
    # a preview on B of another size: B renders it, and A then finds it in the store
    resp = await b.get("/api/v1/file/lib/-/landscape.jpg?preview&size=90", allow_redirects=False)
    assert resp.status == 302 and await renders_made(b) == 1
    assert (await a.get(resp.headers["Location"])).status == 200 and await renders_made(a) == 1


async def test_a_store_that_fails_only_costs_renders(aiohttp_client: Any, media: Path, tmp_path: Path,
                                                     seaweedfs: Any) -> None:
    store = {"url": "s3://nowhere/renders", **seaweedfs.s3_table(endpoint=f"http://127.0.0.1:{free_port()}")}
    a = await host(aiohttp_client, tmp_path / "a", media, store)
    resp = await a.get("/api/v1/file/lib/-/landscape.jpg?preview&size=70", allow_redirects=False)
    assert resp.status == 302 and await renders_made(a) == 1
    text = await (await a.get("/metrics")).text()
    assert re.search(r'preview_render_store_total\{result="error"\} [1-9]', text)


def test_the_render_store_section_is_checked(tmp_path: Path, media: Path) -> None:
    import pytest

    from proxy.config import ConfigError

    with pytest.raises(ConfigError, match=r"\[render_store\] url"):
        build_config(config_raw(tmp_path, media, render_store={"url": "http://bucket"}))
    with pytest.raises(ConfigError, match=r"\[render_store\] s3.endpoint"):
        build_config(config_raw(tmp_path, media, render_store={"url": "s3://bk", "endpoint": "host:1"}))
    assert build_config(config_raw(tmp_path, media)).render_store is None
