"""Per-request cost of proxy/s3.py (botocore's signer over aiohttp) against aiobotocore, same store.

    PYTHON_WITH_AIOBOTOCORE bench/s3_clients.py ENDPOINT BUCKET KEY ACCESS_KEY SECRET_KEY

Run by ``bench_s3.py --aiobotocore PYTHON`` (aiobotocore is no dependency of the project: it pins
botocore, so it lives in a venv of its own). Prints one JSON object: for a HEAD and for a whole GET of
``KEY``, the wall and the CPU (this process) microseconds per call of each client, best of 3 x 200,
the clients alternated; the connection pool of each is warm.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiobotocore.session import get_session

from proxy.s3 import S3Client
from proxy.s3config import S3Config
from proxy.types import Secret


async def timed(fn: Callable[[], Awaitable[object]], runs: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(runs):
        await fn()
    return (time.perf_counter() - wall) / runs * 1e6, (time.process_time() - cpu) / runs * 1e6


async def main(endpoint: str, bucket: str, key: str, access: str, secret: str, runs: int = 200) -> None:
    ours = S3Client(S3Config(endpoint=endpoint, addressing="path", access_key_id=access,
                             secret_access_key=Secret(secret)), bucket)
    async with get_session().create_client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                           aws_access_key_id=access, aws_secret_access_key=secret) as theirs:
        async def their_get() -> None:
            resp = await theirs.get_object(Bucket=bucket, Key=key)
            async with resp["Body"] as body:
                await body.read()

        calls = {"ours_head": lambda: ours.head(key), "aiobotocore_head": lambda: theirs.head_object(
                 Bucket=bucket, Key=key), "ours_get": lambda: ours.get(key), "aiobotocore_get": their_get}
        best: dict[str, tuple[float, float]] = {}
        for _ in range(3):
            for name, fn in calls.items():
                await fn()  # warm: connection, credentials, botocore's loaders
                got = await timed(fn, runs)
                best[name] = min(best.get(name, got), got)
    await ours.close()
    print(json.dumps({f"{name}_{part}": round(v[i]) for name, v in best.items()
                      for i, part in enumerate(("wall_us", "cpu_us"))}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
