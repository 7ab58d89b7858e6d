"""proxy/s3.py against a real SeaweedFS: signed reads and writes, listing, typed errors."""

from __future__ import annotations

from typing import Any

import pytest
from seaweed import SECRET_KEY

from proxy.errors import FileNotFound, SourceTooLarge
from proxy.s3 import S3Client, S3Error
from proxy.types import Secret


@pytest.fixture
async def bucket(seaweedfs: Any, s3_bucket: str) -> Any:
    client = seaweedfs.client(s3_bucket)
    yield client
    await client.close()


async def test_put_head_get_delete(bucket: S3Client) -> None:
    key = "相册 一/照片 1+%.bin"
    etag = await bucket.put(key, b"hello world")
    head = await bucket.head(key)
    assert head is not None and head.size == 11 and head.etag == etag
    assert await bucket.head(key, etag=etag) is None  # 304: unchanged
    obj, body = await bucket.get(key)
    assert body == b"hello world" and obj.etag == etag
    await bucket.delete(key)
    with pytest.raises(FileNotFound):
        await bucket.head(key)
    with pytest.raises(FileNotFound):
        await bucket.get(key)


async def test_stream_is_capped_before_the_body(bucket: S3Client) -> None:
    await bucket.put("big.bin", b"x" * 300_000)
    with pytest.raises(SourceTooLarge, match="300000 bytes"):
        async with bucket.open("big.bin", max_bytes=1000):
            pass
    async with bucket.open("big.bin") as (obj, chunks):
        assert obj.size == 300_000
        assert sum([len(c) async for c in chunks]) == 300_000


async def test_list_pages(bucket: S3Client) -> None:
    keys = sorted(f"p/{i:02d} x.jpg" for i in range(7))
    for key in keys:
        await bucket.put(key, b"1")
    await bucket.put("other.jpg", b"1")
    assert [o.key async for o in bucket.list("p/", page_size=3)] == keys
    await bucket.check()


async def test_presigned_url_reads_without_credentials(bucket: S3Client) -> None:
    import aiohttp

    await bucket.put("a b/é.txt", b"presigned")
    async with aiohttp.ClientSession() as session:
        async with session.get(bucket.url("a b/é.txt")) as resp:
            assert resp.status == 403  # anonymous reads are refused
        from yarl import URL

        async with session.get(URL(await bucket.presign("a b/é.txt", 60), encoded=True)) as resp:
            assert resp.status == 200 and await resp.read() == b"presigned"


async def test_errors_say_which_trouble(seaweedfs: Any, s3_bucket: str) -> None:
    cases = [
        (seaweedfs.client(s3_bucket, secret_access_key=Secret("not-the-secret")), "SignatureDoesNotMatch"),
        (seaweedfs.client(s3_bucket, access_key_id="NOSUCHKEY"), "InvalidAccessKeyId"),
        (seaweedfs.client("no-such-bucket-here"), "NoSuchBucket"),
        (seaweedfs.client(s3_bucket, endpoint="http://127.0.0.1:9"), "cannot be reached"),
    ]
    for client, words in cases:
        for call in (client.check(), client.head("a.jpg"), client.get("a.jpg")):
            with pytest.raises(S3Error, match=words) as err:
                await call
            assert err.value.status == 502 and SECRET_KEY not in err.value.message
            assert "not-the-secret" not in err.value.message
        await client.close()


async def test_clock_skew_is_named(bucket: S3Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's clock 20 minutes behind: the real server's RequestTimeTooSkewed, said plainly."""
    import datetime

    import botocore.auth

    late = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: late)
    with pytest.raises(S3Error, match="clock is too far") as err:
        await bucket.get("a.jpg")
    assert err.value.s3_code == "RequestTimeTooSkewed"


async def test_an_endpoint_that_is_not_s3(http_origin: Any) -> None:
    """A web server named as the endpoint: its 404 page is no answer about keys or buckets."""
    from proxy.s3config import S3Config

    client = S3Client(S3Config(endpoint=http_origin.url.rstrip("/"), addressing="path", access_key_id="AK",
                               secret_access_key=Secret("sk")), "bucket")
    for call in (client.check(), client.head("landscape.jpg"), client.get("x.jpg")):
        with pytest.raises(S3Error, match="did not answer like an S3 store"):
            await call
    await client.close()


async def test_keys_from_botocores_chain(seaweedfs: Any, s3_bucket: str, tmp_path: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """No keys in the config or the environment: a shared credentials file (botocore's chain) works."""
    from seaweed import ACCESS_KEY

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "credentials").write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance to ask here
    client = seaweedfs.client(s3_bucket, access_key_id="", secret_access_key=Secret(""))
    await client.put("from-chain.txt", b"ok")
    assert (await client.get("from-chain.txt"))[1] == b"ok"
    await client.close()


def test_addressing() -> None:
    from proxy.s3config import S3Config

    aws = S3Client(S3Config(region="eu-west-1"), "my-bucket")
    assert aws.url("a b/照片.jpg") == "https://my-bucket.s3.eu-west-1.amazonaws.com/a%20b/%E7%85%A7%E7%89%87.jpg"
    cos = S3Client(S3Config(endpoint="https://cos.ap-guangzhou.myqcloud.com", addressing="virtual"), "p-125")
    assert cos.url("x.jpg") == "https://p-125.cos.ap-guangzhou.myqcloud.com/x.jpg"
    local = S3Client(S3Config(endpoint="http://127.0.0.1:9000"), "media")
    assert local.url("x.jpg", {"prefix": "a b", "list-type": "2"}) == \
        "http://127.0.0.1:9000/media/x.jpg?list-type=2&prefix=a%20b"
