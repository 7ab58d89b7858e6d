"""The shortest path through the whole service: a preview renders and its asset is served."""

from __future__ import annotations

from conftest import preview


async def test_size_200_of_a_generated_photo(client) -> None:
    image = await preview(client, "landscape.jpg", "size=200")
    assert (image.width, image.height) == (200, 200)


async def test_http_origin_serves_the_same(aiohttp_client, make_config, http_origin) -> None:
    from proxy.app import create_app

    cfg = make_config(libraries=[{"id": "web", "origin": http_origin.url, "secret": "s"}])
    client = await aiohttp_client(create_app(cfg))
    image = await preview(client, "portrait.jpg", "width_size=100", library="web")
    assert (image.width, image.height) == (100, 167)
