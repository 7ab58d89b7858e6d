"""The bounded render executor: ``workers`` renders at once, ``queue_limit`` waiting, 429 beyond.

Every libvips and OpenCV call runs here, never on the event loop. A render is *admitted* (a ticket)
before its source is fetched: tickets are at most ``workers + queue_limit``, so concurrent origin
downloads are too, and a request over that is refused at once (429 with ``Retry-After``) before any
byte is fetched. The slots are an asyncio semaphore the size of the thread pool, so the pool's own
queue stays empty.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

from .errors import RateLimitExceeded, RenderTimeout
from .metrics import Metrics

T = TypeVar("T")


class RenderPool:
    def __init__(self, workers: int, queue_limit: int, metrics: Metrics) -> None:
        self.workers = workers
        self.queue_limit = queue_limit
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="render")
        self._slots: asyncio.Semaphore | None = None
        self.admitted = 0  # tickets out: fetching, waiting for a slot, or rendering
        self.running = 0

    @property
    def waiting(self) -> int:
        """Admitted renders not running yet: fetching their source, or waiting for a slot."""
        return self.admitted - self.running

    @asynccontextmanager
    async def admit(self, deadline: float = 0.0) -> AsyncIterator[Ticket]:
        """A ticket for one render, taken before its source is fetched; 429 when every ticket is out.
        ``deadline`` (``time.monotonic()``, 0 = none) bounds the render's steps: ``Ticket.check``."""
        if self.admitted >= self.workers + self.queue_limit:
            self.metrics.rejected.inc()
            raise RateLimitExceeded(headers={"Retry-After": "1"})
        self.admitted += 1
        self.metrics.queue_depth.set(self.waiting)
        try:
            yield Ticket(self, deadline)
        finally:
            self.admitted -= 1
            self.metrics.queue_depth.set(self.waiting)

    async def _run(self, ticket: Ticket, fn: Callable[..., T], *args: object) -> T:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        remaining = ticket.deadline - time.monotonic() if ticket.deadline else None
        try:
            await asyncio.wait_for(self._slots.acquire(), remaining)
        except TimeoutError:
            raise RenderTimeout("the render waited for a slot past its deadline") from None
        self.running += 1
        self.metrics.queue_depth.set(self.waiting)
        self.metrics.renders_running.set(self.running)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.running -= 1
            self.metrics.queue_depth.set(self.waiting)
            self.metrics.renders_running.set(self.running)
            self._slots.release()

    async def on_every_thread(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` once on each worker thread (per-thread state such as face detectors)."""
        barrier = threading.Barrier(self.workers)

        def run() -> None:
            fn()
            barrier.wait(timeout=60)  # holds this thread, so each call lands on a different one

        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.executor, run) for _ in range(self.workers)))

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=False)


class Ticket:
    """An admitted render: its deadline, checked between steps, and its turn on a render thread."""

    def __init__(self, pool: RenderPool, deadline: float) -> None:
        self.pool = pool
        self.deadline = deadline

    def check(self, step: str) -> None:
        """RenderTimeout (503) when the deadline passed before ``step``."""
        if self.deadline and time.monotonic() > self.deadline:
            raise RenderTimeout(f"the render passed its deadline before {step}")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on a render thread once a slot is free (within the deadline)."""
        self.check("rendering")
        return await self.pool._run(self, fn, *args)
