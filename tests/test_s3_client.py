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
