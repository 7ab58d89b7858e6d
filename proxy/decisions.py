"""Micro-cache of public 302s: a repeated public preview URL is answered from one dict lookup.

Within ``cache.version_ttl`` seconds the answer to a public preview is fully determined by its raw
path and query: the source's version is trusted that long anyway, and the render is on disk. So the
finished headers are kept per raw request URI for that long, and a repeat skips parsing, the
access check, the version lookup and the key hash. Token-bearing requests never use it (tokens
slide their expiry on every use). Eviction does not empty it: the evictor spares a render used
within ``2 x version_ttl + evict_grace`` seconds, and an evicted render's asset URL makes it again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Answer:
    headers: dict[str, str]
    rel: str            # the render's path in the disk cache (its LRU position is refreshed on a hit)
    expires: float      # time.monotonic()


class Decisions:
    def __init__(self, ttl: float, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._answers: OrderedDict[str, Answer] = OrderedDict()

    def get(self, uri: str) -> Answer | None:
        answer = self._answers.get(uri)
        if answer is None:
            return None
        if answer.expires < time.monotonic():
            del self._answers[uri]
            return None
        return answer

    def put(self, uri: str, headers: dict[str, str], rel: str) -> None:
        if self.ttl <= 0:
            return
        self._answers[uri] = Answer(headers, rel, time.monotonic() + self.ttl)
        self._answers.move_to_end(uri)
        if len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def clear(self) -> None:
        self._answers.clear()

    def __len__(self) -> int:
        return len(self._answers)
