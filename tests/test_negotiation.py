"""Format negotiation on ``Accept`` (API section 9): which format, ``Vary: Accept`` exactly where it
applies, the chosen format in the cache key and the asset's extension."""

from __future__ import annotations

from typing import Any

import pytest
import pyvips
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, follow

from proxy.app import create_app
from proxy.config import ConfigError, build_config
from proxy.request import accepted_format

API = "/api/v1/file/lib/-/"
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI_OLD = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
FIREFOX_OLD = "image/webp,*/*"


@pytest.mark.parametrize(("accept", "offer", "chosen"), [
    (CHROME, ("avif", "webp"), "avif"),
    (CHROME, ("webp", "avif"), "webp"),          # the config's order, not the header's
    (SAFARI_OLD, ("avif", "webp"), "webp"),
    (FIREFOX_OLD, ("avif",), ""),
    ("*/*", ("avif", "webp"), ""),               # wildcards name no format
    ("image/*", ("avif", "webp"), ""),
    ("", ("avif", "webp"), ""),
    ("image/avif;q=0, image/webp", ("avif", "webp"), "webp"),  # q=0: refused
    ("IMAGE/AVIF ; Q=0.5", ("avif",), "avif"),
    ("image/avif;q=bad", ("avif",), ""),
    ("image/avifx, image/av", ("avif",), ""),
    (CHROME, (), ""),
])
def test_accepted_format(accept: str, offer: tuple[str, ...], chosen: str) -> None:
    assert accepted_format(accept, offer) == chosen


async def negotiating(aiohttp_client: Any, make_config: ConfigFactory, offer: list[str]) -> TestClient:
    return await aiohttp_client(create_app(make_config(output={"negotiate": offer})))


async def answer(client: TestClient, url: str, accept: str = "") -> dict[str, str]:
    resp = await client.get(url, headers={"Accept": accept} if accept else {}, allow_redirects=False)
    assert resp.status == 302, (resp.status, await resp.text())
    return dict(resp.headers)


async def rendered(client: TestClient, location: str) -> tuple[str, pyvips.Image]:
    status, headers, body = await follow(client, location)
    assert status == 200
    return headers["Content-Type"], pyvips.Image.new_from_buffer(body, "")


async def test_a_photo_goes_to_the_first_accepted_format(aiohttp_client: Any,
                                                        make_config: ConfigFactory) -> None:
    client = await negotiating(aiohttp_client, make_config, ["avif", "webp"])
    url = API + "landscape.jpg?preview&size=64"
    avif = await answer(client, url, CHROME)
    assert avif["Vary"] == "Accept" and avif["Location"].endswith(".avif")
    content_type, image = await rendered(client, avif["Location"])
    assert content_type == "image/avif" and (image.width, image.height) == (64, 64)
    webp = await answer(client, url, SAFARI_OLD)
    assert webp["Vary"] == "Accept" and webp["Location"].endswith(".webp")
    assert (await rendered(client, webp["Location"]))[0] == "image/webp"
    # the fallback varies too: a shared cache must not hand this JPEG to the next AVIF client
    for accept in ("*/*", "image/*", ""):
        jpeg = await answer(client, url, accept)
        assert jpeg["Vary"] == "Accept" and jpeg["Location"].endswith((".jpeg", ".jpg")), accept
        assert (await rendered(client, jpeg["Location"]))[0] == "image/jpeg"
    # asked again (now from the micro-cache of public 302s): still one answer per Accept
    assert (await answer(client, url, CHROME))["Location"] == avif["Location"]
    assert (await answer(client, url, SAFARI_OLD))["Location"] == webp["Location"]
    assert (await answer(client, url, "*/*"))["Location"] == jpeg["Location"]


async def test_png_negotiates_and_keeps_its_alpha(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    client = await negotiating(aiohttp_client, make_config, ["webp"])
    headers = await answer(client, API + "alpha.png?preview&size=40", CHROME)
    assert headers["Vary"] == "Accept" and headers["Location"].endswith(".webp")
    content_type, image = await rendered(client, headers["Location"])
    assert content_type == "image/webp" and image.hasalpha()


async def test_the_negotiated_format_is_in_the_key(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    """The same render as an explicit ``format=``: one asset per (photo, options, format)."""
    client = await negotiating(aiohttp_client, make_config, ["avif"])
    negotiated = await answer(client, API + "portrait.jpg?preview&size=30", CHROME)
    explicit = await answer(client, API + "portrait.jpg?preview&size=30&format=avif")
    assert negotiated["Location"] == explicit["Location"]
    assert "Vary" not in explicit


@pytest.mark.parametrize(("url", "ending"), [
    (API + "landscape.jpg?preview&size=64&format=jpeg", (".jpeg", ".jpg")),  # an explicit format wins
    (API + "landscape.jpg?preview&size=64&format=png", (".png",)),
    (API + "still.gif?preview&size=64", (".gif",)),                          # GIF keeps GIF
    (API + "pic.webp?preview&size=64", (".webp",)),   # not JPEG/PNG output: nothing to negotiate
    (API + "doc.pdf?preview", ("doc.pdf",)),          # not previewable: a download link
    (API + "landscape.jpg", ("landscape.jpg",)),      # a download link
])
async def test_no_vary_where_negotiation_does_not_apply(aiohttp_client: Any, make_config: ConfigFactory,
                                                        url: str, ending: tuple[str, ...]) -> None:
    client = await negotiating(aiohttp_client, make_config, ["avif", "webp"])
    headers = await answer(client, url, CHROME)
    assert "Vary" not in headers and headers["Location"].partition("?")[0].endswith(ending)


async def test_off_by_default(client: TestClient) -> None:
    headers = await answer(client, API + "landscape.jpg?preview&size=64", CHROME)
    assert "Vary" not in headers and headers["Location"].endswith((".jpeg", ".jpg"))


async def test_a_token_302_varies_too_and_stays_private(aiohttp_client: Any,
                                                       make_config: ConfigFactory) -> None:
    config = make_config(output={"negotiate": ["avif"]}, cache={"sign_secret": "s"},
                         libraries=[{"id": "lib", "origin": str(make_config().libraries[0].origin),
                                     "secret": "lib-secret", "public_read": False}])
    client = await aiohttp_client(create_app(config))
    resp = await client.get("/api/v1/token?library_id=lib&library_secret=lib-secret")
    token = (await resp.json())["accessToken"]
    headers = await answer(client, API + f"landscape.jpg?preview&size=20&access_token={token}", CHROME)
    assert headers["Cache-Control"] == "private, no-store" and headers["Vary"] == "Accept"
    assert headers["Location"].partition("?")[0].endswith(".avif")
    status, asset, _ = await follow(client, headers["Location"])
    assert status == 200 and asset["Cache-Control"].startswith("private, max-age=")


def test_config_checks_the_list() -> None:
    base = {"libraries": [{"id": "a", "origin": ".", "secret": "x"}]}
    offer = build_config({**base, "output": {"negotiate": ["webp", "avif"]}}).output.negotiate
    assert offer == ("webp", "avif")
    for bad in (["avif", "jpeg"], ["avif", "avif"], [1], 5):
        with pytest.raises(ConfigError, match="negotiate"):
            build_config({**base, "output": {"negotiate": bad}})
    env = "PREVIEW_PROXY_OUTPUT_NEGOTIATE"
    assert build_config(base, env={env: "webp, avif"}).output.negotiate == ("webp", "avif")
    assert build_config({**base, "output": {"negotiate": ["avif"]}}, env={env: ""}).output.negotiate == ()
