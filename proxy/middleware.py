"""The one middleware: request id, the JSON error body, the per-request JSON log line, metrics.

Deep code raises ``ApiError``; only here does it become ``{"code", "message", "requestId"}``.
Anything else is a bug: logged with its traceback, answered 500 without one.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from .errors import ApiError, InternalServerError, NotFound
from .metrics import Metrics

log = logging.getLogger("proxy.access")
errors_log = logging.getLogger("proxy.error")
_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = "request_id"  # request-scoped values (plain keys: aiohttp's Request is a dict)
CACHE = "cache"            # "hit" / "miss" / None for the log line
USER = "user"              # the user an admin token acts as, for the log line


def error_response(request: web.Request, exc: ApiError, request_id: str) -> web.Response:
    headers = {"X-Request-Id": request_id, **exc.headers}
    if request.method == "HEAD":
        return web.Response(status=exc.status, headers=headers)
    body = json.dumps({"code": exc.code, "message": exc.message, "requestId": request_id})
    return web.Response(status=exc.status, body=body.encode(), content_type="application/json",
                        headers=headers)


def make_middleware(metrics: Metrics) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    requests = metrics.requests

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        request_id = incoming if _INCOMING_ID.match(incoming) else uuid.uuid4().hex
        request[REQUEST_ID] = request_id
        try:
            response = await handler(request)
            response.headers["X-Request-Id"] = request_id
        except ApiError as exc:
            response = error_response(request, exc, request_id)
        except web.HTTPException as exc:
            # aiohttp's own 404/405 for paths no route matches: same JSON body as ours
            api = NotFound(code="RouteNotFound") if exc.status == 404 else ApiError(exc.reason)
            api.status = exc.status
            response = error_response(request, api, request_id)
        except Exception:
            errors_log.exception("unhandled error", extra={"request_id": request_id})
            response = error_response(request, InternalServerError(), request_id)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        requests.labels(route, response.status).inc()
        if log.isEnabledFor(logging.INFO):
            entry = {"ts": round(time.time(), 3), "id": request_id, "method": request.method,
                     "path": request.path, "status": response.status,
                     "ms": round((time.perf_counter() - started) * 1000, 2)}
            if request.get(CACHE):
                entry["cache"] = request[CACHE]
            if request.get(USER):
                entry["user"] = request[USER]
            log.info(json.dumps(entry, ensure_ascii=False))
        return response

    return middleware
