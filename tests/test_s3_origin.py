"""S3 origins (``origin = "s3://bucket/prefix"``) against a real SeaweedFS: the API of sections 1-5 on
objects of a private bucket, and every way reading one can go wrong."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pyvips
from aiohttp import ClientPayloadError, web
from aiohttp.test_utils import TestClient
from conftest import ConfigFactory, config_raw, follow, free_port, gradient, log_lines, preview, write_config
from seaweed import SECRET_KEY, SeaweedFS

from proxy.app import create_app
from proxy.config import load_config
from proxy.origin import check_origins
from proxy.s3origin import S3Origin
from proxy.tools import warm


async def upload(seaweedfs: SeaweedFS, bucket: str, folder: Path, prefix: str) -> None:
    client = seaweedfs.client(bucket)
    try:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                await client.put(prefix + path.relative_to(folder).as_posix(), path.read_bytes())
    finally:
        await client.close()


@pytest.fixture
async def s3_origin(seaweedfs: SeaweedFS, s3_bucket: str, media: Path) -> str:
    """The generated media under ``photos/`` of a fresh private bucket: the library's origin URL."""
    await upload(seaweedfs, s3_bucket, media, "photos/")
    return f"s3://{s3_bucket}/photos"


async def app_for(aiohttp_client: Any, make_config: ConfigFactory, seaweedfs: SeaweedFS, origin: str,
                  s3: dict[str, Any] | None = None, **sections: Any) -> TestClient:
    lib = {"id": "lib", "origin": origin, "secret": "lib-secret", "s3": seaweedfs.s3_table(**(s3 or {}))}
    return await aiohttp_client(create_app(make_config(libraries=[lib], **sections)))


async def error_of(client: TestClient, path: str) -> tuple[int, dict[str, str]]:
    resp = await client.get(f"/api/v1/file/lib/-/{path}", allow_redirects=False)
    return resp.status, await resp.json()


async def test_sizing_exif_alpha_and_names(aiohttp_client: Any, make_config: ConfigFactory,
                                           seaweedfs: SeaweedFS, s3_origin: str) -> None:
    client = await app_for(aiohttp_client, make_config, seaweedfs, s3_origin)
    assert (await preview(client, "landscape.jpg", "size=100")).width == 100
    image = await preview(client, "landscape.jpg", "size=100")
    assert (image.width, image.height) == (100, 100)
    image = await preview(client, "landscape.jpg", "scale=50")
    assert (image.width, image.height) == (320, 214)
    image = await preview(client, "portrait.jpg", "width_size=150&height_size=150")
    assert (image.width, image.height) == (90, 150)
    image = await preview(client, "tiny.jpg", "size=400")  # never upscaled
    assert max(image.width, image.height) <= 80
    image = await preview(client, "landscape.jpg")
    assert (image.width, image.height) == (640, 427)
    image = await preview(client, "rotated6.jpg", "width_size=120")  # EXIF orientation 6 applied
    assert (image.width, image.height) == (120, 200)
    image = await preview(client, "alpha.png", "size=50")
    assert image.bands == 4 and image.get("test-content-type") == "image/png"
    image = await preview(client, quote("相册 一/照片 1.jpg"), "size=64")
    assert (image.width, image.height) == (64, 64)


async def test_downloads_are_the_original_bytes(aiohttp_client: Any, make_config: ConfigFactory,
                                                seaweedfs: SeaweedFS, s3_origin: str, media: Path) -> None:
    client = await app_for(aiohttp_client, make_config, seaweedfs, s3_origin)
    for rel in ("landscape.jpg", "doc.pdf", "相册 一/照片 1.jpg"):
        resp = await client.get(f"/api/v1/file/lib/-/{quote(rel)}", allow_redirects=False)
        assert resp.status == 302, await resp.text()
        status, headers, body = await follow(client, resp.headers["Location"])
        assert status == 200 and body == (media / rel).read_bytes()
        assert headers["X-Content-Type-Options"] == "nosniff"
    resp = await client.head("/api/v1/file/lib/-/landscape.jpg", allow_redirects=False)
    assert resp.headers["x-smh-size"] == str((media / "landscape.jpg").stat().st_size)
    assert resp.headers["x-smh-etag"].startswith('"')
    # a non-previewable file's preview is its download link
    resp = await client.get("/api/v1/file/lib/-/doc.pdf?preview", allow_redirects=False)
    assert resp.status == 302 and "/o/lib/-/doc.pdf" in resp.headers["Location"]


async def test_mount_streams_originals(aiohttp_client: Any, make_config: ConfigFactory, seaweedfs: SeaweedFS,
                                       s3_origin: str, media: Path) -> None:
    lib = {"id": "lib", "origin": s3_origin, "secret": "s", "mount": "/media/", "s3": seaweedfs.s3_table()}
    client = await aiohttp_client(create_app(make_config(libraries=[lib])))
    resp = await client.get("/media/" + quote("相册 一/照片 1.jpg"))
    assert resp.status == 200 and await resp.read() == (media / "相册 一" / "照片 1.jpg").read_bytes()
    resp = await client.get("/media/landscape.jpg?preview&size=80", allow_redirects=False)
    assert resp.status == 302


async def test_multi_tenant_spaces_are_prefixes(aiohttp_client: Any, make_config: ConfigFactory,
                                                seaweedfs: SeaweedFS, s3_bucket: str, media: Path) -> None:
    await upload(seaweedfs, s3_bucket, media, "tenants/alice/")
    lib = {"id": "lib", "origin": f"s3://{s3_bucket}/tenants", "secret": "s", "multi_tenant": True,
           "s3": seaweedfs.s3_table()}
    client = await aiohttp_client(create_app(make_config(libraries=[lib])))
    image = await preview(client, "landscape.jpg", "size=60", space="alice")
    assert image.width == 60
    resp = await client.get("/api/v1/file/lib/bob/landscape.jpg?preview", allow_redirects=False)
    assert resp.status == 404 and (await resp.json())["code"] == "FileNotFound"


async def test_missing_key(aiohttp_client: Any, make_config: ConfigFactory, seaweedfs: SeaweedFS,
                           s3_origin: str) -> None:
    client = await app_for(aiohttp_client, make_config, seaweedfs, s3_origin)
    for path in ("nope.jpg?preview&size=10", "nope.jpg", quote("相册 一/nope.png") + "?preview"):
        status, body = await error_of(client, path)
        assert (status, body["code"]) == (404, "FileNotFound")


@pytest.mark.parametrize(("s3", "origin", "words"), [
    ({"secret_access_key": "wrong-secret-0000"}, "", "SignatureDoesNotMatch"),
    ({"access_key_id": "NOSUCHKEYID"}, "", "InvalidAccessKeyId"),
    ({}, "s3://no-such-bucket-0/photos", "does not exist (NoSuchBucket)"),
])
async def test_refusals_are_502_saying_which(
        aiohttp_client: Any, make_config: ConfigFactory, seaweedfs: SeaweedFS, s3_origin: str,
        s3: dict[str, str], origin: str, words: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = await app_for(aiohttp_client, make_config, seaweedfs, origin or s3_origin, s3)
    for path in ("landscape.jpg?preview&size=10", "landscape.jpg"):
        status, body = await error_of(client, path)
        assert (status, body["code"]) == (502, "OriginError") and words in body["message"], body
    metrics = await (await client.get("/metrics")).text()
    access = await log_lines(client, caplog)
    assert [line["status"] for line in access][:2] == [502, 502]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (json.dumps(body), metrics, logged):
        assert SECRET_KEY not in text and "wrong-secret-0000" not in text


async def test_wrong_region(aiohttp_client: Any, make_config: ConfigFactory) -> None:
    """SeaweedFS signs with any region it is sent, so AWS's answer to a wrong one comes from a stand-in:
    the 400 AuthorizationHeaderMalformed that names the bucket's region (what S3 sends to a request
    signed for another region)."""
    scopes: list[str] = []

    async def aws(request: web.Request) -> web.Response:
        scopes.append(request.headers.get("Authorization", ""))
        body = ("<Error><Code>AuthorizationHeaderMalformed</Code><Message>the region 'us-east-1' is wrong; "
                "expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>")
        return web.Response(status=400, body=body if request.method != "HEAD" else None,
                            content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", aws)
    server = await aiohttp_client(app)
    lib = {"id": "lib", "origin": "s3://bucket/p", "secret": "s",
           "s3": {"endpoint": str(server.make_url("")).rstrip("/"), "region": "us-east-1",
                  "access_key_id": "AK", "secret_access_key": "sk-region-test"}}
    config = make_config(libraries=[lib])
    client = await aiohttp_client(create_app(config))
    status, body = await error_of(client, "a.jpg?preview")
    assert status == 502 and "wrong region" in body["message"] and "'eu-west-1'" in body["message"]
    assert "/us-east-1/s3/aws4_request" in scopes[0]  # signed for the configured region
    problems = await check_origins(config)
    assert any("wrong region" in p and "eu-west-1" in p for p in problems)


async def test_object_replaced_renders_anew(aiohttp_client: Any, make_config: ConfigFactory,
                                            seaweedfs: SeaweedFS, s3_origin: str, s3_bucket: str) -> None:
    client = await app_for(aiohttp_client, make_config, seaweedfs, s3_origin, cache={"version_ttl": 0.1})
    url = "/api/v1/file/lib/-/landscape.jpg?preview&width_size=100"
    first = await client.get(url, allow_redirects=False)
    store = seaweedfs.client(s3_bucket)
    await store.put("photos/landscape.jpg", gradient(200, 400).jpegsave_buffer(Q=90))
    await store.close()
    await asyncio.sleep(0.3)
    second = await client.get(url, allow_redirects=False)
    assert first.headers["Location"] != second.headers["Location"]
    _, _, body = await follow(client, second.headers["Location"])
    image = pyvips.Image.new_from_buffer(body, "")
    assert (image.width, image.height) == (100, 200)


async def test_object_over_the_byte_cap(aiohttp_client: Any, make_config: ConfigFactory,
                                        seaweedfs: SeaweedFS, s3_origin: str) -> None:
    client = await app_for(aiohttp_client, make_config, seaweedfs, s3_origin,
                           limits={"max_source_bytes": 20_000})
    status, body = await error_of(client, "landscape.jpg?preview&size=100")  # ~40 kB
    assert (status, body["code"]) == (413, "SourceTooLarge") and "over the limit" in body["message"]
    assert (await preview(client, "tiny.jpg", "size=10")).width == 10


async def test_store_stopping_mid_body(tmp_path: Path, make_config: ConfigFactory,
                                       aiohttp_client: Any) -> None:
    """A store of its own, killed while an original streams: the download is cut, never cut short
    silently, and the next request is a 502 that names the unreachable endpoint."""
    store = SeaweedFS(tmp_path / "dying").start()
    try:
        await store.create_bucket("big")
        bucket = store.client("big")
        await bucket.put("big.mp4", bytes(range(256)) * (64 * 1024**2 // 256))
        await bucket.close()
        lib = {"id": "lib", "origin": "s3://big", "secret": "s", "s3": store.s3_table()}
        client = await aiohttp_client(create_app(make_config(libraries=[lib])))
        resp = await client.get("/api/v1/file/lib/-/big.mp4", allow_redirects=False)
        original = await client.get(resp.headers["Location"])
        assert original.status == 200
        got = len(await original.content.readexactly(1024**2))
        store.kill()
        with pytest.raises(ClientPayloadError):
            while chunk := await original.content.read(1024**2):
                got += len(chunk)
        assert got < 64 * 1024**2
        status, body = await error_of(client, "big.mp4?preview")
        assert status == 502 and "cannot be reached" in body["message"]
    finally:
        store.kill()


async def test_listing_for_gallery_and_warm(seaweedfs: SeaweedFS, s3_origin: str, make_config: ConfigFactory,
                                            aiohttp_client: Any) -> None:
    lib = {"id": "lib", "origin": s3_origin, "secret": "s", "s3": seaweedfs.s3_table()}
    config = make_config(libraries=[lib], server={"gallery": True})
    origin = S3Origin(s3_origin, config.libraries[0].s3, config.limits,  # type: ignore[arg-type]
                      ThreadPoolExecutor(1), config.cache.dir)
    try:
        listed = await origin.list("", 1000)
    finally:
        await origin.close()
    assert listed is not None and "相册 一/照片 1.jpg" in listed and "doc.pdf" not in listed
    assert listed == sorted(listed) and "landscape.jpg" in listed
    client = await aiohttp_client(create_app(config))
    page = await (await client.get("/?size=100")).text()
    assert quote("相册 一/照片 1.jpg") in page or "相册 一/照片 1.jpg" in page
    summary = await warm(config, config.libraries[0], "-", [40], [], progress=False)
    assert summary.rendered + sum(summary.failed.values()) == len(listed)
    assert sum(summary.failed.values()) == 1  # broken.jpg
    assert all(reason.startswith("UnsupportedMedia") for reason in summary.failed)


async def test_check_and_start_with_one_library_refused(seaweedfs: SeaweedFS, s3_origin: str,
                                                        tmp_path: Path, aiohttp_client: Any,
                                                        make_config: ConfigFactory) -> None:
    good = {"id": "good", "origin": s3_origin, "secret": "s", "s3": seaweedfs.s3_table()}
    bad = {"id": "bad", "origin": s3_origin, "secret": "s",
           "s3": seaweedfs.s3_table(secret_access_key="wrong-secret-1111")}
    gone = {"id": "gone", "origin": s3_origin, "secret": "s",
            "s3": seaweedfs.s3_table(endpoint=f"http://127.0.0.1:{free_port()}")}
    config = make_config(libraries=[good, bad, gone])
    problems = await check_origins(config)
    assert len(problems) == 2, problems
    assert "'bad'" in problems[0] and "SignatureDoesNotMatch" in problems[0] and "the config" in problems[0]
    assert "'gone'" in problems[1] and "cannot be reached" in problems[1]
    assert all("wrong-secret-1111" not in p and SECRET_KEY not in p for p in problems)
    client = await aiohttp_client(create_app(config))  # the service starts all the same
    assert (await preview(client, "landscape.jpg", "size=20", library="good")).width == 20
    resp = await client.get("/api/v1/file/bad/-/landscape.jpg?preview", allow_redirects=False)
    assert resp.status == 502


async def test_through_nginx(seaweedfs: SeaweedFS, s3_origin: str, tmp_path: Path, media: Path) -> None:
    """nginx cannot sign for S3: originals and mount URLs of an S3 library go to the proxy, which
    checks the link and streams the object; renders still come from disk. No key in nginx.conf."""
    from nginx_helpers import Nginx, Service, get

    s3 = seaweedfs.s3_table()
    libraries = [{"id": "lib", "origin": s3_origin, "secret": "s", "mount": "/media/", "s3": s3},
                 {"id": "priv", "origin": s3_origin, "secret": "s", "public_read": False, "s3": s3}]
    path = write_config(tmp_path / "config.toml",
                        config_raw(tmp_path, media, cache={"sign_secret": "sign-it"}, libraries=libraries))
    service, nginx = Service(path), Nginx(tmp_path / "nginx", free_port())
    service.start()
    try:
        nginx.start(load_config(path), [f"127.0.0.1:{service.port}"])
        conf = (tmp_path / "nginx" / "nginx.conf").read_text()
        assert SECRET_KEY not in conf and seaweedfs.endpoint not in conf
        status, headers, _ = get(nginx.port, "/api/v1/file/lib/-/" + quote("相册 一/照片 1.jpg"))
        assert status == 302
        status, _, body = get(nginx.port, headers["location"])
        assert status == 200 and body == (media / "相册 一" / "照片 1.jpg").read_bytes()
        status, _, body = get(nginx.port, "/media/landscape.jpg")
        assert status == 200 and body == (media / "landscape.jpg").read_bytes()
        status, headers, _ = get(nginx.port, "/media/landscape.jpg?preview&size=30")
        status, _, body = get(nginx.port, headers["location"])
        assert status == 200 and pyvips.Image.new_from_buffer(body, "").width == 30
        assert get(nginx.port, "/_assets/o/priv/-/landscape.jpg")[0] == 403  # private: unsigned refused
    finally:
        nginx.stop()
        service.stop()


def test_check_command_names_the_library(seaweedfs: SeaweedFS, s3_origin: str, tmp_path: Path, media: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.__main__ import main

    s3 = seaweedfs.s3_table()
    libraries = [{"id": "good", "origin": s3_origin, "secret": "s", "s3": s3},
                 {"id": "typo", "origin": "s3://no-such-bucket-2/photos", "secret": "s", "s3": s3}]
    good = write_config(tmp_path / "good.toml", config_raw(tmp_path, media, libraries=libraries[:1]))
    assert main(["check", "--config", str(good)]) == 0
    both = write_config(tmp_path / "both.toml", config_raw(tmp_path, media, libraries=libraries))
    assert main(["check", "--config", str(both)]) == 1
    out = capsys.readouterr().out
    assert "library 'typo'" in out and "library 'good'" not in out.split("problem:", 1)[1]


def test_check_probe_on_an_s3_library(seaweedfs: SeaweedFS, s3_origin: str, tmp_path: Path, media: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.__main__ import main

    lib = {"id": "lib", "origin": s3_origin, "secret": "s", "s3": seaweedfs.s3_table()}
    path = write_config(tmp_path / "c.toml", config_raw(tmp_path, media, libraries=[lib]))
    assert main(["check", "--config", str(path), "--probe", "lib:相册 一/照片 1.jpg"]) == 0
    assert main(["check", "--config", str(path), "--probe", "lib:nope.jpg"]) == 1
    assert "nope.jpg is not found" in capsys.readouterr().out
