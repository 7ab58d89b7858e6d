"""The one middleware: request id, the JSON error body, the per-request JSON log line, metrics.

Deep code raises ``ApiError``; only here does it become ``{"code", "message", "requestId"}``.
Anything else is a bug: logged with its traceback, answered 500 without one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import Counter

from .errors import ApiError, InternalServerError, NotFound
from .metrics import Metrics

log = logging.getLogger("proxy.access")
errors_log = logging.getLogger("proxy.error")
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)  # request-scoped values for the log line
CACHE = web.RequestKey("cache", str)            # "hit" / "miss" / None for the log line
USER = web.RequestKey("user", str)              # the user an admin token acts as, for the log line
LOG_PATH = web.RequestKey("log_path", str)      # logged instead of request.path (a token in the path)
ABORTED = web.RequestKey("aborted", str)        # why a response was cut off after its status line


def error_response(request: web.Request, exc: ApiError, request_id: str) -> web.Response:
    # an error is an answer for this moment (a file not there yet, a full queue): never for a shared cache
    headers = {"X-Request-Id": request_id, "Cache-Control": "no-store", **exc.headers}
    if request.method == "HEAD":
        return web.Response(status=exc.status, headers=headers)
    body = json.dumps({"code": exc.code, "message": exc.message, "requestId": request_id})
    return web.Response(status=exc.status, body=body.encode(), content_type="application/json",
                        headers=headers)


class AccessLog:
    """One JSON line per request, handed to the ``proxy.access`` logger in batches.

    At thousands of cached 302s a second, one logging call (and one write) per request is a large
    share of a request's cost; lines are gathered for at most ``FLUSH_AFTER`` seconds instead.
    """

    FLUSH_AFTER = 0.05
    MAX_LINES = 256

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= self.MAX_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines = self._lines, []
            log.info("\n".join(lines))


def make_middleware(metrics: Metrics, access_log: AccessLog
                    ) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    requests = metrics.requests
    counters: dict[tuple[str, int], Counter] = {}  # prometheus' labels() takes a lock per call

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if incoming and _INCOMING_ID.match(incoming) else os.urandom(16).hex()
        request[REQUEST_ID] = request_id
        try:
            response = await handler(request)
            response.headers["X-Request-Id"] = request_id
        except ApiError as exc:
            response = error_response(request, exc, request_id)
        except web.HTTPException as exc:
            # aiohttp's own 404/405 for paths no route matches: same JSON body as ours
            # (a 405 is not a bug: its code names it, as 500's InternalServerError would not)
            allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
            api = NotFound(code="RouteNotFound") if exc.status == 404 else ApiError(
                exc.reason, code=exc.reason.replace(" ", ""), headers=allow)
            api.status = exc.status
            response = error_response(request, api, request_id)
        except Exception:
            errors_log.exception("unhandled error", extra={"request_id": request_id})
            response = error_response(request, InternalServerError(), request_id)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        counter = counters.get((route, response.status))
        if counter is None:
            counter = counters[(route, response.status)] = requests.labels(route, response.status)
        counter.inc()
        if log.isEnabledFor(logging.INFO):
            # formatted by hand: json.dumps of a dict is a visible share of a cached 302's cost. The id
            # is hex or checked by _INCOMING_ID, the method a token (aiohttp's parser): neither needs
            # escaping; the path and the user do.
            path = json.dumps(request.get(LOG_PATH) or request.path, ensure_ascii=False)
            line = (f'{{"ts": {time.time():.3f}, "id": "{request_id}", "method": "{request.method}", '
                    f'"path": {path}, "status": {response.status}, '
                    f'"ms": {(time.perf_counter() - started) * 1000:.2f}')
            if cache := request.get(CACHE):
                line += f', "cache": "{cache}"'
            if user := request.get(USER):
                line += f', "user": {json.dumps(user, ensure_ascii=False)}'
            if aborted := request.get(ABORTED):  # a code or "client_gone": no escaping needed
                line += f', "aborted": "{aborted}"'
            access_log.add(line + "}")
        return response

    return middleware
