"""The bounded render executor: ``workers`` renders at once, ``queue_limit`` waiting, 429 beyond.

Every libvips and OpenCV call runs here, never on the event loop. The slots are an asyncio
semaphore the size of the thread pool, so the pool's own queue stays empty and a request over the
queue limit is refused at once (with ``Retry-After``) instead of waiting behind work it cannot see.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import RateLimitExceeded
from .metrics import Metrics

T = TypeVar("T")


class RenderPool:
    def __init__(self, workers: int, queue_limit: int, metrics: Metrics) -> None:
        self.workers = workers
        self.queue_limit = queue_limit
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="render")
        self._slots: asyncio.Semaphore | None = None
        self.waiting = 0
        self.running = 0

    def check(self) -> None:
        """429 now when a render would have to wait and the queue is full: called before fetching
        the source too, so that a flood is refused before any origin byte is read."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        if self._slots.locked() and self.waiting >= self.queue_limit:
            self.metrics.rejected.inc()
            raise RateLimitExceeded(headers={"Retry-After": "1"})

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on a render thread once a slot is free; 429 when the queue is full."""
        self.check()
        assert self._slots is not None
        self.waiting += 1
        self.metrics.queue_depth.set(self.waiting)
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
            self.metrics.queue_depth.set(self.waiting)
        self.running += 1
        self.metrics.renders_running.set(self.running)
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        finally:
            self.running -= 1
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
