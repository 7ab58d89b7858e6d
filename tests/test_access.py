"""Access rules (API.md section 2) and signed asset links (section 4), through the real app."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, follow, log_lines, preview

from proxy.access import sign
from proxy.app import create_app
from proxy.config import ConfigError

SIGN = "test-sign-secret"
PRIV = {"id": "priv", "origin": "", "secret": "priv-secret", "public_read": False}


@pytest.fixture
def multi(media: Path, tmp_path: Path) -> Path:
    """A multi-tenant origin: spaces a, b, pub, shut (each with one photo)."""
    root = tmp_path / "multi"
    for space in ("a", "b", "pub", "shut"):
        (root / space).mkdir(parents=True)
        shutil.copyfile(media / "landscape.jpg", root / space / "photo.jpg")
    return root


@pytest.fixture
async def app_client(aiohttp_client: Any, make_config: ConfigFactory, media: Path, multi: Path) -> TestClient:
    cfg = make_config(cache={"sign_secret": SIGN}, libraries=[
        {"id": "lib", "origin": str(media), "secret": "lib-secret", "mount": "/media/"},
        {**PRIV, "origin": str(media), "mount": "/private/"},
        {"id": "multi", "origin": str(multi), "secret": "multi-secret", "multi_tenant": True,
         "public_read": False, "spaces": {"pub": {"public_read": True}}},
        {"id": "open", "origin": str(multi), "secret": "open-secret", "multi_tenant": True,
         "spaces": {"shut": {"public_read": False}}},
    ])
    return await aiohttp_client(create_app(cfg))


async def token(client: TestClient, library: str = "priv", secret: str = "priv-secret", **extra: str) -> str:
    resp = await client.get("/api/v1/token?" + urlencode({"library_id": library, "library_secret": secret,
                                                          **extra}))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["accessToken"]


async def get(client: TestClient, url: str, **headers: str) -> tuple[int, dict[str, str], Any]:
    resp = await client.get(url, allow_redirects=False, headers=headers)
    body = await resp.read()
    return resp.status, dict(resp.headers), json.loads(body) if body.startswith(b"{") else body


PHOTO = "/api/v1/file/priv/-/landscape.jpg?preview&size=64"


def multi_url(space: str, query: str, library: str = "multi") -> str:
    return f"/api/v1/file/{library}/{space}/photo.jpg?preview&size=32&{query}"


# ---- public and private libraries -------------------------------------------------------------------


async def test_public_library_needs_no_token_and_its_links_are_unsigned(app_client: TestClient) -> None:
    status, headers, _ = await get(app_client, "/api/v1/file/lib/-/landscape.jpg?preview&size=64")
    assert status == 302
    assert headers["Cache-Control"] == "public, max-age=60, stale-while-revalidate=0"
    assert "md5=" not in headers["Location"]
    status, asset_headers, _ = await follow(app_client, headers["Location"])
    assert (status, asset_headers["Cache-Control"]) == (200, "public, max-age=31536000, immutable")


async def test_private_library_without_token_is_400(app_client: TestClient) -> None:
    status, _, body = await get(app_client, PHOTO)
    assert (status, body["code"]) == (400, "EmptyAccessToken")


@pytest.mark.parametrize("bad", ["acctkNOPE", "x" * 43, "", "a b"])
async def test_unknown_token_is_403(app_client: TestClient, bad: str) -> None:
    status, _, body = await get(app_client, PHOTO, Authorization=f"Bearer {bad}x")
    assert (status, body["code"]) == (403, "InvalidAccessToken")


async def test_token_in_query_gives_a_private_signed_redirect(app_client: TestClient) -> None:
    t = await token(app_client)
    status, headers, _ = await get(app_client, f"{PHOTO}&access_token={t}")
    assert status == 302
    assert headers["Cache-Control"] == "private, no-store"
    parts = urlsplit(headers["Location"])
    q = parse_qs(parts.query)
    assert parts.path.startswith("/_assets/p/")
    # the exact string nginx's secure_link_md5 "$secure_link_expires$uri <secret>" hashes
    expected = hashlib.md5(f"{q['expires'][0]}{parts.path} {SIGN}".encode()).digest()
    assert q["md5"][0] == base64.urlsafe_b64encode(expected).decode().rstrip("=")
    status, asset_headers, _ = await follow(app_client, headers["Location"])
    assert status == 200
    max_age = int(asset_headers["Cache-Control"].removeprefix("private, max-age="))
    assert 3600 - 5 <= max_age <= 3600 + 60


async def test_bearer_header_works_like_the_query(app_client: TestClient) -> None:
    t = await token(app_client)
    for scheme in ("Bearer", "bearer"):
        status, headers, _ = await get(app_client, PHOTO, Authorization=f"{scheme} {t}")
        assert (status, headers["Cache-Control"]) == (302, "private, no-store")
    image = await preview(app_client, "landscape.jpg", f"size=50&access_token={t}", library="priv")
    assert (image.width, image.height) == (50, 50)


async def test_head_with_token_answers_like_get(app_client: TestClient) -> None:
    t = await token(app_client)
    resp = await app_client.head(f"{PHOTO}&access_token={t}", allow_redirects=False)
    assert resp.status == 302 and "md5=" in resp.headers["Location"]


async def test_token_of_another_library_is_invalid(app_client: TestClient) -> None:
    t = await token(app_client, "multi", "multi-secret", space_id="a")
    status, _, body = await get(app_client, f"{PHOTO}&access_token={t}")
    assert (status, body["code"]) == (403, "InvalidAccessToken")


# ---- signed asset links -----------------------------------------------------------------------------


async def _signed_location(client: TestClient, url: str) -> tuple[str, dict[str, str]]:
    status, headers, _ = await get(client, url)
    assert status == 302
    parts = urlsplit(headers["Location"])
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


async def test_tampered_unsigned_and_expired_links_are_403(app_client: TestClient) -> None:
    t = await token(app_client)
    path, q = await _signed_location(app_client, f"{PHOTO}&access_token={t}")
    bad = q["md5"][:-2] + ("AA" if not q["md5"].endswith("AA") else "BB")
    past = int(time.time()) - 10
    for url in (f"{path}?{urlencode({'md5': bad, 'expires': q['expires']})}",
                f"{path}?{urlencode({'md5': q['md5'], 'expires': int(q['expires']) + 60})}",
                path,
                f"{path}?expires={q['expires']}",
                f"{path}?{urlencode({'md5': sign(path, past, SIGN), 'expires': past})}"):
        status, _, body = await get(app_client, url)
        assert (status, body["code"]) == (403, "InvalidSignature"), url


async def test_download_link_of_private_file_is_signed(app_client: TestClient, media: Path) -> None:
    t = await token(app_client)
    path, q = await _signed_location(app_client, f"/api/v1/file/priv/-/doc.pdf?access_token={t}")
    assert path.startswith("/_assets/o/priv/-/")
    status, headers, body = await follow(app_client, f"{path}?{urlencode(q)}")
    assert (status, body) == (200, (media / "doc.pdf").read_bytes())
    assert headers["Cache-Control"].startswith("private, max-age=")
    assert (await get(app_client, path))[0] == 403
    # not previewable under ?preview: the same signed original
    path2, _ = await _signed_location(app_client, f"/api/v1/file/priv/-/doc.pdf?preview&access_token={t}")
    assert path2 == path


async def test_private_mount_streams_originals_with_a_token_only(app_client: TestClient, media: Path) -> None:
    status, _, body = await get(app_client, "/private/tiny.jpg")
    assert (status, body["code"]) == (400, "EmptyAccessToken")
    t = await token(app_client)
    status, headers, body = await get(app_client, "/private/tiny.jpg", Authorization=f"Bearer {t}")
    assert (status, body) == (200, (media / "tiny.jpg").read_bytes())
    assert headers["Cache-Control"].startswith("private")


# ---- spaces -----------------------------------------------------------------------------------------


async def test_space_token_reaches_its_spaces_only(app_client: TestClient) -> None:
    t = await token(app_client, "multi", "multi-secret", space_id="a")
    status, _, body = await get(app_client, multi_url("b", f"access_token={t}"))
    assert (status, body["code"]) == (403, "AccessTokenNotMatchSpace")
    assert (await get(app_client, multi_url("a", f"access_token={t}")))[0] == 302
    status, _, body = await get(app_client, multi_url("-", f"access_token={t}"))
    assert (status, body["code"]) == (400, "EmptySpaceId")
    both = await token(app_client, "multi", "multi-secret", space_id="a,b")
    for space in ("a", "b"):
        assert (await get(app_client, multi_url(space, f"access_token={both}")))[0] == 302


async def test_token_without_spaces_reaches_no_multi_tenant_space(app_client: TestClient) -> None:
    t = await token(app_client, "multi", "multi-secret")
    status, _, body = await get(app_client, multi_url("a", f"access_token={t}"))
    assert (status, body["code"]) == (403, "AccessTokenNotMatchSpace")


async def test_per_space_public_read_overrides_the_library(app_client: TestClient) -> None:
    status, headers, _ = await get(app_client, "/api/v1/file/multi/pub/photo.jpg?preview&size=32")
    assert (status, headers["Cache-Control"]) == (302, "public, max-age=60, stale-while-revalidate=0")
    assert "md5=" not in headers["Location"]
    assert (await get(app_client, "/api/v1/file/open/a/photo.jpg?preview&size=32"))[0] == 302
    status, _, body = await get(app_client, "/api/v1/file/open/shut/photo.jpg?preview&size=32")
    assert (status, body["code"]) == (400, "EmptyAccessToken")
    t = await token(app_client, "open", "open-secret", space_id="shut")
    status, headers, _ = await get(app_client, multi_url("shut", f"access_token={t}", "open"))
    assert status == 302 and "md5=" in headers["Location"]


async def test_single_tenant_library_refuses_a_space(app_client: TestClient) -> None:
    t = await token(app_client)
    status, _, body = await get(app_client, f"/api/v1/file/priv/x/landscape.jpg?preview&access_token={t}")
    assert (status, body["code"]) == (400, "NotMultiSpaceLibrary")


# ---- admin tokens and user_id -----------------------------------------------------------------------


async def _users(client: TestClient, caplog: pytest.LogCaptureFixture) -> list[str | None]:
    return [line.get("user") for line in await log_lines(client, caplog)
            if line["path"].startswith("/api/v1/file/")]


async def test_admin_token_reaches_every_space_and_acts_as_user_id(
        app_client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    t = await token(app_client, "multi", "multi-secret", grant="admin")
    for space in ("a", "b"):
        status, _, _ = await get(app_client, multi_url(space, f"user_id=bob&access_token={t}"))
        assert status == 302
    assert await _users(app_client, caplog) == ["bob", "bob"]


async def test_user_id_is_ignored_on_other_tokens(app_client: TestClient,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    carol_admin = await token(app_client, "multi", "multi-secret", grant="admin", user_id="carol")
    plain = await token(app_client, "multi", "multi-secret", space_id="a", user_id="dave")
    anonymous = await token(app_client, "multi", "multi-secret", space_id="a")
    for t in (carol_admin, plain, anonymous):
        status, _, _ = await get(app_client, multi_url("a", f"user_id=bob&access_token={t}"))
        assert status == 302
    assert await _users(app_client, caplog) == ["carol", "dave", None]
    # user_id never widens a plain token: still only its space
    status, _, body = await get(app_client, multi_url("b", f"user_id=bob&access_token={plain}"))
    assert (status, body["code"]) == (403, "AccessTokenNotMatchSpace")


# ---- config -----------------------------------------------------------------------------------------


def test_private_library_without_sign_secret_is_refused(make_config: ConfigFactory, media: Path) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(libraries=[{**PRIV, "origin": str(media)}])
    assert any("sign_secret" in p for p in err.value.problems)
    with pytest.raises(ConfigError):  # a private space of a public library needs it as much
        make_config(libraries=[{"id": "m", "origin": str(media), "secret": "s", "multi_tenant": True,
                                "spaces": {"x": {"public_read": False}}}])
    make_config(libraries=[{**PRIV, "origin": str(media)}], cache={"sign_secret": SIGN})
