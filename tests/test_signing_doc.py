"""What README.md and ``proxy/links.py`` say about signed links is what the code does: the signature
covers the percent-decoded path (as nginx's ``$uri``), not the path as it appears in the URL."""

from __future__ import annotations

from urllib.parse import parse_qs, quote, unquote, urlsplit

from aiohttp.test_utils import TestClient
from conftest import ROOT, ConfigFactory

import proxy.links
from proxy.app import create_app
from proxy.links import sign


async def test_links_are_signed_over_the_decoded_path(aiohttp_client, make_config: ConfigFactory,
                                                      media) -> None:
    private = {"id": "priv", "origin": str(media), "secret": "s", "public_read": False}
    config = make_config(cache={"sign_secret": "doc-secret"}, libraries=[private])
    client: TestClient = await aiohttp_client(create_app(config))
    token = (await (await client.post("/api/v1/token", data={"library_id": "priv", "library_secret": "s"}))
             .json())["accessToken"]
    resp = await client.get(f"/api/v1/file/priv/-/{quote('相册 一/照片 1.jpg')}?access_token={token}",
                            allow_redirects=False)
    assert resp.status == 302
    link = urlsplit(resp.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert "%20" in link.path  # the URL carries the encoded path...
    assert query["md5"] == sign(unquote(link.path), int(query["expires"]), "doc-secret")  # ...signed decoded
    assert query["md5"] != sign(link.path, int(query["expires"]), "doc-secret")
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "percent-decoded, as nginx's `$uri` is" in readme
    assert "the decoded path (nginx's ``$uri``)" in " ".join((proxy.links.__doc__ or "").split())
