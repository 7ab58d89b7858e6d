"""Fuzzing the path and query parser with hypothesis: never a 500, never a traceback, always the JSON
error (or a 302) - first on the pure parser, then over raw HTTP against the live app."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import config_raw, write_config, write_media
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from processes import Service

from proxy.errors import ApiError
from proxy.request import is_preview, parse_credentials, parse_file_route, parse_options, parse_query

PARAMS = ["preview", "size", "scale", "width_size", "height_size", "frame_number", "format",
          "access_token", "user_id", "debug"]
NASTY = ["..", ".", "", "%2e%2e", "%2F", "%00", "\\", "%5C", "/", "//", "%", "%zz", "%ff", "%c0%af",
         "照片 1.jpg", "landscape.jpg", "a.jpg", "doc.pdf", "x" * 300, "%252e%252e", "~", "\u202e"]
NUMBERS = ["0", "1", "64", "-1", "4096", "4097", "8193", "1e3", "0x10", " 5", "5 ", "+5", "٣", "1.5",
           "99999999999999999999999", "", "NaN"]

segment = st.one_of(st.sampled_from(NASTY), st.text(min_size=0, max_size=20))
raw_segment = st.one_of(st.sampled_from(NASTY), st.text(st.characters(codec="ascii"), max_size=12)
                        .map(lambda s: quote(s, safe="%/.")))
value = st.one_of(st.sampled_from(NUMBERS), st.text(max_size=12))
query_pairs = st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), st.text(max_size=8)), value), max_size=6)
raw_query = st.one_of(
    query_pairs.map(lambda pairs: "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs)),
    st.text(st.characters(codec="latin-1"), max_size=40).map(lambda s: quote(s, safe="&=%+;")),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(segment, min_size=0, max_size=6))
def test_path_parser_raises_only_api_errors(parts: list[str]) -> None:
    try:
        parse_file_route("/".join(parts))
    except ApiError as exc:
        assert 400 <= exc.status < 500 and exc.code


@settings(max_examples=400, deadline=None)
@given(raw_query)
def test_query_parser_raises_only_api_errors(raw: str) -> None:
    try:
        query = parse_query(raw)
        is_preview(query)
        parse_options(query)
        parse_credentials(query, query.get("authorization"))
    except ApiError as exc:
        assert exc.status == 400 and exc.code


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("fuzz")
    media = write_media(root / "media")
    (root / "multi" / "a").mkdir(parents=True)
    config = write_config(root / "config.toml", config_raw(
        root, media, cache={"sign_secret": "fuzz-sign-secret"},
        libraries=[{"id": "lib", "origin": str(media), "secret": "lib-secret"},
                   {"id": "priv", "origin": str(media), "secret": "priv-secret", "public_read": False},
                   {"id": "multi", "origin": str(root / "multi"), "secret": "m", "multi_tenant": True}]))
    server = Service(config).start()
    yield server
    server.stop()


def raw_get(server: Service, target: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def assert_clean(status: int, headers: dict[str, str], body: bytes, method: str = "GET") -> None:
    assert status < 500, (status, body[:300])  # every library is a local folder: no origin to blame
    if status in (302, 304) or 200 <= status < 300:
        return
    assert "x-request-id" in headers
    if method == "HEAD":
        assert body == b""
        return
    assert headers["content-type"].startswith("application/json"), (status, body[:300])
    payload = json.loads(body)
    assert set(payload) == {"code", "message", "requestId"}, payload
    assert payload["requestId"] == headers["x-request-id"]
    assert "Traceback" not in body.decode("utf-8", "replace")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(library=st.sampled_from(["lib", "priv", "multi", "nope", "%00", "", "a" * 80]),
       space=st.sampled_from(["-", "a", "", "..", "%2F", "b" * 65, "a%00"]),
       path=st.lists(raw_segment, min_size=0, max_size=5), query=raw_query,
       method=st.sampled_from(["GET", "HEAD"]))
def test_file_route_over_http(live: Service, library: str, space: str, path: list[str], query: str,
                              method: str) -> None:
    target = f"/api/v1/file/{library}/{space}/{'/'.join(path)}" + (f"?{query}" if query else "")
    if any(ord(c) < 33 or ord(c) > 126 for c in target):
        target = quote(target, safe="/?&=%+;")  # http.client refuses control characters in a target
    status, headers, body = raw_get(live, target, method)
    assert_clean(status, headers, body, method)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(["/api/v1/token", "/api/v1/token/lib", "/api/v1/token/lib/tok",
                               "/_assets/", "/_assets/o/lib/-/", "/healthz", "/nothing", "/api/v1/file/"]),
       tail=st.lists(raw_segment, max_size=3), query=raw_query)
def test_other_routes_over_http(live: Service, prefix: str, tail: list[str], query: str) -> None:
    target = prefix + "/".join(tail) + (f"?{query}" if query else "")
    if any(ord(c) < 33 or ord(c) > 126 for c in target):
        target = quote(target, safe="/?&=%+;")
    status, headers, body = raw_get(live, target)
    assert_clean(status, headers, body)


def test_known_nasty_requests(live: Service, tmp_path: Path) -> None:
    """The classics, each a clear 4xx JSON error."""
    cases = {
        "/api/v1/file/lib/-/../etc/passwd?preview": 400,
        "/api/v1/file/lib/-/%2e%2e/%2e%2e/etc/passwd?preview": 400,
        "/api/v1/file/lib/-/a%00.jpg?preview": 400,
        "/api/v1/file/lib/-/a%5C..%5Cb.jpg?preview": 400,
        "/api/v1/file/lib/-/landscape.jpg?preview&size=0": 400,
        "/api/v1/file/lib/-/landscape.jpg?preview&size=4097": 400,
        "/api/v1/file/lib/-/landscape.jpg?preview&size=1e3": 400,
        "/api/v1/file/lib/-/landscape.jpg?preview&size=%ff": 400,
        "/api/v1/file/lib/-/landscape.jpg?preview&" + "&".join(f"k{i}=v" for i in range(100)): 400,
        "/api/v1/file/lib/x/landscape.jpg?preview": 400,
        "/api/v1/file/multi/-/a.jpg?preview": 400,
        "/api/v1/file/priv/-/landscape.jpg?preview": 400,
        "/api/v1/file/nope/-/landscape.jpg?preview": 404,
        "/api/v1/file/lib/-/%ff%fe.jpg?preview": 400,
        "/api/v1/file/lib/-/" + "a/" * 2000 + "b.jpg?preview": 404,  # deep, but under aiohttp's 8 KiB line
    }
    for target, want in cases.items():
        status, headers, body = raw_get(live, target)
        assert_clean(status, headers, body)
        assert status == want, (target[:80], status, body[:200])
    # Over 8190 bytes the request line never reaches the app: aiohttp's parser answers a plain-text
    # 400 (nginx answers 414 first in production). A 4xx, not JSON: noted, not ours to reshape.
    status, _headers, _body = raw_get(live, "/api/v1/file/lib/-/" + "a/" * 5000 + "b.jpg?preview")
    assert status == 400
