"""Token endpoints (API.md section 2): create, renew, revoke one, revoke a user's; no secret in logs."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, log_lines

from proxy.app import create_app
from proxy.keys import STORE
from proxy.routes.tokens import BUDGET, FailureBudget

PHOTO = "/api/v1/file/priv/-/landscape.jpg?preview&size=64"


@pytest.fixture
async def client(aiohttp_client: Any, make_config: ConfigFactory, media: Path) -> TestClient:
    cfg = make_config(cache={"sign_secret": "sign"}, libraries=[
        {"id": "priv", "origin": str(media), "secret": "priv-secret", "public_read": False},
        {"id": "other", "origin": str(media), "secret": "other-secret", "public_read": False},
        {"id": "nosecret", "origin": str(media), "public_read": False},
    ])
    return await aiohttp_client(create_app(cfg))


async def create(client: TestClient, method: str = "GET", **params: str) -> tuple[int, Any]:
    query = {"library_id": "priv", "library_secret": "priv-secret", **params}
    resp = await client.request(method, "/api/v1/token?" + urlencode(query))
    return resp.status, await resp.json()


async def use(client: TestClient, token: str) -> int:
    return (await client.get(f"{PHOTO}&access_token={token}", allow_redirects=False)).status


# ---- create -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_create_answers_a_random_token_for_a_day(client: TestClient, method: str) -> None:
    status, body = await create(client, method)
    assert status == 200 and set(body) == {"accessToken", "expiresIn"}
    assert body["expiresIn"] == 86400
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", body["accessToken"])  # 192 random bits
    assert (await create(client, method))[1]["accessToken"] != body["accessToken"]
    assert await use(client, body["accessToken"]) == 302


async def test_create_takes_a_form_body_on_post(client: TestClient) -> None:
    resp = await client.post("/api/v1/token", data={"library_id": "priv", "library_secret": "priv-secret",
                                                     "period": "5000"})
    assert resp.status == 200 and (await resp.json())["expiresIn"] == 5000


@pytest.mark.parametrize(("period", "expected"), [("10", 1200), ("1199", 1200), ("1200", 1200),
                                                  ("5000", 5000), ("", 86400)])
async def test_period_default_and_floor(client: TestClient, period: str, expected: int) -> None:
    status, body = await create(client, period=period)
    assert (status, body["expiresIn"]) == (200, expected)


@pytest.mark.parametrize("period", ["-5", "1.5", "abc", str(400 * 86400)])
async def test_period_not_a_sane_whole_number_is_400(client: TestClient, period: str) -> None:
    status, body = await create(client, period=period)
    assert (status, body["code"]) == (400, "InvalidParameter")


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"library_id": ""}, 400, "EmptyLibraryId"),
    ({"library_secret": ""}, 400, "EmptyLibrarySecret"),
    ({"library_secret": "nope"}, 404, "WrongLibraryIdOrSecret"),
    ({"library_secret": "other-secret"}, 404, "WrongLibraryIdOrSecret"),
    ({"library_id": "nolib"}, 404, "WrongLibraryIdOrSecret"),
    ({"library_id": "nosecret", "library_secret": "x"}, 404, "WrongLibraryIdOrSecret"),
    ({"space_id": "a"}, 400, "NotMultiSpaceLibrary"),
    ({"grant": "ad min"}, 400, "InvalidParameter"),
    ({"user_id": "u" * 300}, 400, "InvalidParameter"),
])
async def test_create_errors(client: TestClient, params: dict[str, str], status: int, code: str) -> None:
    got, body = await create(client, **params)
    assert (got, body["code"]) == (status, code)


async def test_missing_parameters_entirely(client: TestClient) -> None:
    resp = await client.get("/api/v1/token")
    assert (resp.status, (await resp.json())["code"]) == (400, "EmptyLibraryId")
    resp = await client.get("/api/v1/token?library_id=priv")
    assert (resp.status, (await resp.json())["code"]) == (400, "EmptyLibrarySecret")


# ---- renew and revoke -------------------------------------------------------------------------------


async def test_renew_answers_the_same_token_and_period(client: TestClient) -> None:
    t = (await create(client, period="3000"))[1]["accessToken"]
    resp = await client.post(f"/api/v1/token/priv/{t}")
    assert resp.status == 200
    assert await resp.json() == {"accessToken": t, "expiresIn": 3000}
    for library, token in (("priv", "acctkNOPE-0123456789"), ("other", t)):
        resp = await client.post(f"/api/v1/token/{library}/{token}")
        assert (resp.status, (await resp.json())["code"]) == (403, "InvalidAccessToken")


async def test_delete_one_revokes_it_at_once(client: TestClient) -> None:
    t = (await create(client))[1]["accessToken"]
    keep = (await create(client))[1]["accessToken"]
    assert (await client.delete(f"/api/v1/token/other/{t}")).status == 204  # not that library's: kept
    assert await use(client, t) == 302
    assert (await client.delete(f"/api/v1/token/priv/{t}")).status == 204
    assert await use(client, t) == 403
    assert (await client.post(f"/api/v1/token/priv/{t}")).status == 403
    assert (await client.delete(f"/api/v1/token/priv/{t}")).status == 204  # idempotent
    assert await use(client, keep) == 302


async def test_other_methods_on_a_token_path_are_405(client: TestClient) -> None:
    resp = await client.get("/api/v1/token/priv/sometoken123456789")
    assert resp.status == 405


async def test_delete_a_users_tokens_by_client_and_session(client: TestClient) -> None:
    made = {}
    for name, extra in {"phone": {"client_id": "phone", "session_id": "s1"},
                        "phone2": {"client_id": "phone", "session_id": "s2"},
                        "laptop": {"client_id": "laptop", "session_id": "s1"},
                        "bare": {}}.items():
        made[name] = (await create(client, user_id="dave", **extra))[1]["accessToken"]
    erin = (await create(client, user_id="erin", client_id="phone"))[1]["accessToken"]

    async def delete(**params: str) -> int:
        q = urlencode({"library_secret": "priv-secret", "user_id": "dave", **params})
        return (await client.delete(f"/api/v1/token/priv?{q}")).status

    assert await delete(client_id="phone", session_id="s2") == 204
    assert [await use(client, made[n]) for n in ("phone", "phone2", "laptop", "bare")] == [302, 403, 302, 302]
    assert await delete(client_id="phone") == 204
    assert [await use(client, made[n]) for n in ("phone", "laptop", "bare")] == [403, 302, 302]
    assert await delete(session_id="s1") == 204
    assert [await use(client, made[n]) for n in ("laptop", "bare")] == [403, 302]
    assert await delete() == 204
    assert await use(client, made["bare"]) == 403
    assert await use(client, erin) == 302  # another user's token with the same client id: untouched


@pytest.mark.parametrize(("query", "status", "code"), [
    ("library_secret=nope&user_id=dave", 404, "WrongLibraryIdOrSecret"),
    ("user_id=dave", 400, "EmptyLibrarySecret"),
    ("library_secret=priv-secret", 400, "InvalidParameter"),
])
async def test_delete_a_users_tokens_errors(client: TestClient, query: str, status: int, code: str) -> None:
    resp = await client.delete(f"/api/v1/token/priv?{query}")
    assert (resp.status, (await resp.json())["code"]) == (status, code)


async def test_users_token_index_is_pruned_of_expired_tokens(client: TestClient) -> None:
    store = client.app[STORE]
    tokens = [(await create(client, user_id="frank"))[1]["accessToken"] for _ in range(65)]
    for t in tokens[:60]:
        await store.delete("token", t)  # as if expired
    await create(client, user_id="frank")
    members = await store.members("token-user", next(iter(store._sets)).split(":", 2)[2])
    assert len(members) == 6


# ---- failure budget ---------------------------------------------------------------------------------


async def test_a_burst_of_wrong_secrets_is_slowed_but_the_right_one_is_not(client: TestClient) -> None:
    budget = client.app[BUDGET]  # the app has started: tune its budget in place
    budget.burst, budget.rate, budget.delay = 3, 0.0, 0.3
    started = time.monotonic()
    for _ in range(3):
        assert (await create(client, library_secret="guess"))[0] == 404
    assert time.monotonic() - started < 0.3
    started = time.monotonic()
    assert (await create(client, library_secret="guess"))[0] == 404
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert (await create(client))[0] == 200
    assert time.monotonic() - started < 0.2
    # another library's budget is its own
    started = time.monotonic()
    assert (await create(client, library_id="other", library_secret="guess"))[0] == 404
    assert time.monotonic() - started < 0.2


def test_the_budget_refills() -> None:
    budget = FailureBudget(burst=2, rate=1000.0, delay=1.0)
    assert [budget.spend("a") for _ in range(2)] == [0.0, 0.0]
    time.sleep(0.01)
    assert budget.spend("a") == 0.0


# ---- nothing secret in the log ----------------------------------------------------------------------


async def test_no_token_or_secret_in_the_log(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    t = (await create(client, user_id="gina", client_id="c"))[1]["accessToken"]
    await create(client, library_secret="wrong-guess")
    await client.post("/api/v1/token", data={"library_id": "priv", "library_secret": "priv-secret"})
    await use(client, t)
    await client.get(PHOTO, headers={"Authorization": f"Bearer {t}"}, allow_redirects=False)
    await client.post(f"/api/v1/token/priv/{t}")
    await client.get(f"/api/v1/token/priv/{t}")
    await client.delete("/api/v1/token/priv?library_secret=priv-secret&user_id=gina&client_id=zzz")
    await client.delete(f"/api/v1/token/priv/{t}")
    lines = await log_lines(client, caplog)
    # the service's own loggers (the test server's aiohttp.access logger is off in `serve`)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("proxy"))
    assert len(lines) == 9
    for secret in (t, "priv-secret", "wrong-guess"):
        assert secret not in text
    assert "/api/v1/token/priv/{AccessToken}" in text
