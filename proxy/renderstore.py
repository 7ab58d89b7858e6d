"""The optional render store shared by every host: an S3-compatible bucket (``[render_store]``).

A host that must make a render looks for it here first (under the same relative path as in its
cache folder, so the same key), and puts what it renders here: a render is made once for the whole
cluster, and a host's first request for an asset rendered elsewhere is a download, not a render.

The store is an optimisation, never a dependency: whatever fails in reading or writing it,
the host renders as it would without one (each failure is a warning and a
``preview_render_store_total{result="error"}``).
"""

from __future__ import annotations

import logging

from .errors import ApiError, FileNotFound
from .media import CONTENT_TYPES
from .metrics import Metrics
from .s3 import S3Client
from .s3config import RenderStoreConfig

log = logging.getLogger("proxy.render_store")
MAX_RENDER_BYTES = 256 * 1024**2  # nothing we write is larger; a bigger object is not ours


class RenderStore:
    def __init__(self, config: RenderStoreConfig, metrics: Metrics, timeout: float) -> None:
        self.prefix = config.prefix
        self.client = S3Client(config.s3, config.bucket, timeout=timeout)
        self.metrics = metrics

    async def get(self, rel: str) -> bytes | None:
        """The render stored under ``rel``; None when there is none (or the store failed)."""
        try:
            _obj, data = await self.client.get(self.prefix + rel, max_bytes=MAX_RENDER_BYTES)
        except FileNotFound:
            self.metrics.render_store.labels("miss").inc()
            return None
        except ApiError as exc:
            self._failed("get", exc)
            return None
        self.metrics.render_store.labels("hit").inc()
        return data

    async def put(self, rel: str, data: bytes) -> None:
        """Store a render for the other hosts (a failure only costs them a render)."""
        try:
            await self.client.put(self.prefix + rel, data, CONTENT_TYPES.get(rel.rpartition(".")[2],
                                                                             "application/octet-stream"))
        except ApiError as exc:
            self._failed("put", exc)

    def _failed(self, what: str, exc: ApiError) -> None:
        self.metrics.render_store.labels("error").inc()
        log.warning('{"event": "render_store_failed", "op": "%s", "code": "%s", "message": "%s"}',
                    what, exc.code, exc.message.replace('"', "'"))

    async def close(self) -> None:
        await self.client.close()
