"""A bounded closed-loop load generator for URLs that must not repeat (cold renders); its own process.

    .venv/bin/python bench/loadgen.py BASE_URL PATHS_FILE --concurrency 8 --seconds 10 [--status 302]

``concurrency`` clients on keep-alive connections each take the next path of PATHS_FILE (one a line,
each used once) until the file is used up or ``seconds`` have passed, then wait for what is in flight
(each request bounded by ``--timeout``). Unlike wrk, requests still in flight at the deadline are
waited for and counted, so that slow peers (seconds per request) are not under-counted. Prints one
JSON line: completed, errors, wall seconds (first send to last answer), rate, p50/p99 ms, and this
process's own CPU seconds (its overhead, to be stated next to the results).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from pathlib import Path

import aiohttp


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; nan when there is no value."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def run(base: str, paths: list[str], concurrency: int, seconds: float, status: int,
              timeout: float) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_SELF)
    todo = iter(paths)
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for path in todo:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            try:
                async with session.get(base + path, allow_redirects=False) as response:
                    await response.read()
                    ok = response.status == status
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"completed": len(latencies), "errors": errors, "wall": wall,
            "rate": len(latencies) / wall if wall else 0.0,
            "p50": percentile(latencies, 0.50) * 1000, "p99": percentile(latencies, 0.99) * 1000,
            "mean": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
            "client_cpu": usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("paths", type=Path)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    paths = args.paths.read_text().split()
    coro = run(args.base, paths, args.concurrency, args.seconds, args.status, args.timeout)
    try:
        import uvloop
    except ImportError:
        print(json.dumps(asyncio.run(coro)))
    else:
        print(json.dumps(uvloop.run(coro)))


if __name__ == "__main__":
    main()
