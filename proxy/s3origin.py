"""An ``s3://bucket/prefix`` origin: a private bucket on any S3-compatible store, read with signed
requests (``s3.py``). The object's ETag is the source version; multi-tenant spaces are prefixes
``<prefix><SpaceId>/``. Downloads stream through the service (see the README for why not presigned).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from pathlib import Path

from .config import LimitsConfig
from .errors import ApiError, SourceTooLarge
from .origin import Origin, SourceStat, discard, previewable_name, spool
from .render import Source
from .s3 import S3Client, S3Error, S3Object
from .s3config import S3Config, parse_s3_origin


def _stat(obj: S3Object) -> SourceStat:
    # the same version shape as an HTTP origin's ETag: a library moved between them keeps its renders
    return SourceStat(obj.size, f"e{obj.etag}" if obj.etag else f"m{obj.last_modified}", etag=obj.etag)


class S3Origin(Origin):
    kind = "s3"

    def __init__(self, origin: str, s3: S3Config, limits: LimitsConfig, io: Executor, spool_dir: Path
                 ) -> None:
        bucket, self.prefix = parse_s3_origin(origin) or ("", "")
        self.client = S3Client(s3, bucket, timeout=limits.origin_timeout)
        self.limits = limits
        self.io = io
        self.spool_dir = spool_dir  # sources are written here, not held in memory (``origin.spool``)

    def key(self, space: str, rel: str) -> str:
        return f"{self.prefix}{space}/{rel}" if space else f"{self.prefix}{rel}"

    async def close(self) -> None:
        await self.client.close()

    async def stat(self, space: str, rel: str) -> SourceStat:
        obj = await self.client.head(self.key(space, rel))
        assert obj is not None  # no ETag was sent, so no 304
        return _stat(obj)

    async def revalidate(self, space: str, rel: str, known: SourceStat) -> SourceStat:
        """If-None-Match on the known ETag: a 304 costs the store no body."""
        obj = await self.client.head(self.key(space, rel), etag=known.etag)
        return known if obj is None else _stat(obj)

    async def fetch(self, space: str, rel: str, known: SourceStat) -> tuple[Source, SourceStat]:
        cap = self.limits.max_source_bytes
        if known.size > cap:  # the HEAD said so: no GET at all
            raise SourceTooLarge(f"the source is {known.size} bytes, over the limit of {cap}")
        async with self.client.open(self.key(space, rel), max_bytes=cap) as (obj, chunks):
            source = await spool(chunks, cap, self.io, self.spool_dir)
        if obj.size >= 0 and source.size != obj.size:
            await asyncio.get_running_loop().run_in_executor(self.io, discard, source)
            raise S3Error("the S3 store sent a body shorter than its Content-Length")
        return source, _stat(obj)

    async def stream(self, space: str, rel: str, known: SourceStat) -> AsyncIterator[bytes]:
        async with self.client.open(self.key(space, rel)) as (_, chunks):
            async for chunk in chunks:
                yield chunk

    async def list(self, space: str, limit: int) -> list[str] | None:
        """ListObjectsV2 under the space's prefix, page by page, up to ``limit`` previewable keys."""
        root = self.key(space, "")
        found: list[str] = []
        async for obj in self.client.list(root):
            rel = obj.key[len(root):]
            if rel and not obj.key.endswith("/") and previewable_name(rel):
                found.append(rel)
                if len(found) >= limit:
                    break
        return found


async def check_s3(origin: str, s3: S3Config, timeout: float) -> str:
    """What stops an ``s3://`` origin from being read, in plain words ("" when nothing does)."""
    bucket, prefix = parse_s3_origin(origin) or ("", "")
    client = S3Client(s3, bucket, timeout=min(timeout, 10))
    try:
        await client.check(prefix)
    except ApiError as exc:
        source = (f"keys from {s3.credentials_from}" if s3.credentials_from
                  else "keys from botocore's chain (none in the config or environment)")
        return f"{exc.message} [{source}]"
    finally:
        await client.close()
    return ""
