"""``openapi.yaml``: a valid OpenAPI 3 document of every route, served at ``/openapi.yaml``, and a
schemathesis run against the live app (no 500s; statuses, content types and bodies as documented)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from conftest import ROOT, config_raw, write_config, write_media
from hypothesis import HealthCheck, given, settings
from processes import Service
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

DOC = ROOT / "openapi.yaml"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("openapi")
    media = write_media(root / "media")
    config = write_config(root / "config.toml", config_raw(
        root, media, cache={"sign_secret": "openapi-sign-secret"},
        libraries=[{"id": "lib", "origin": str(media), "secret": "lib-secret"},
                   {"id": "priv", "origin": str(media), "secret": "priv-secret", "public_read": False}]))
    server = Service(config).start()
    yield server
    server.stop()


def test_document_covers_every_route() -> None:
    doc = yaml.safe_load(DOC.read_text())
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert set(paths["/api/v1/file/{LibraryId}/{SpaceId}/{FilePath}"]) >= {"get", "head"}
    assert set(paths["/api/v1/token"]) >= {"get", "post"}
    assert set(paths["/api/v1/token/{LibraryId}/{AccessToken}"]) >= {"post", "delete"}
    assert "delete" in paths["/api/v1/token/{LibraryId}"]
    assert {"/healthz", "/metrics", "/openapi.yaml", "/_assets/{AssetPath}"} <= set(paths)
    assert doc["components"]["schemas"]["Error"]["required"] == ["code", "message", "requestId"]


def test_served_and_packaged(live: Service) -> None:
    import urllib.request

    with urllib.request.urlopen(f"{live.url}/openapi.yaml", timeout=10) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/yaml")
        assert resp.read() == DOC.read_bytes()
    import proxy.routes.docs as docs

    assert (Path(docs.__file__).parent.parent / "openapi.yaml").read_bytes() == DOC.read_bytes()


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_live_app_matches_the_document(live: Service) -> None:
    """Every operation, examples generated from the document (schemathesis' pytest plugin does not
    load under pytest 9 yet: the operations are driven through hypothesis directly)."""
    loaded = schemathesis.openapi.from_path(DOC)
    loaded.config.update(base_url=live.url)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS, allow_redirects=False)

        check()
