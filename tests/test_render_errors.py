"""libvips errors are typed at the render boundary: a source that fails to decode in the face debug
view (or any pipeline that did not type the error itself) is 415 UnsupportedMedia, never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import ConfigFactory, gradient

from proxy.app import create_app


async def test_a_truncated_photo_in_the_debug_view_is_415(aiohttp_client: Any, make_config: ConfigFactory,
                                                          media: Path) -> None:
    data = gradient(900, 700).jpegsave_buffer(Q=90)
    (media / "cut.jpg").write_bytes(data[: len(data) // 2])  # the header reads; the pixels do not
    client = await aiohttp_client(create_app(make_config(faces={"detector": "yunet", "debug": True})))
    resp = await client.get("/api/v1/file/lib/-/cut.jpg?preview&size=100&debug=faces", allow_redirects=False)
    body = await resp.json()
    assert (resp.status, body["code"]) == (415, "UnsupportedMedia"), body
    # and the ordinary render of the same file says the same
    resp = await client.get("/api/v1/file/lib/-/cut.jpg?preview&size=100", allow_redirects=False)
    assert resp.status == 415
