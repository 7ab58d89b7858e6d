"""The one shape of outgoing HTTP client the origins use (HTTP origins, S3 stores)."""

from __future__ import annotations

import aiohttp


def origin_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """``limits.origin_timeout`` for the whole exchange; connecting gets at most 5 s of it."""
    return aiohttp.ClientTimeout(total=seconds, connect=min(seconds, 5.0), sock_read=seconds)


def origin_session(timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    """Bodies as sent (sources are hashed and decoded as stored), a bounded pool, DNS cached briefly.
    Call it on the running loop: the session belongs to it."""
    return aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                 connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=60),
                                 headers={"User-Agent": "preview-proxy"})
