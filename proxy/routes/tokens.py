"""Token endpoints (API.md section 2): create, renew, revoke one, revoke a user's.

::

    GET|POST /api/v1/token?library_id=L&library_secret=S[&space_id=a,b][&user_id=U]
                           [&client_id=C][&session_id=X][&grant=admin,...][&period=SECONDS]
    POST   /api/v1/token/{LibraryId}/{AccessToken}      renew        -> 200 {"accessToken", "expiresIn"}
    DELETE /api/v1/token/{LibraryId}/{AccessToken}      revoke one   -> 204
    DELETE /api/v1/token/{LibraryId}?library_secret=S&user_id=U[&client_id=C][&session_id=X] -> 204

Parameters come from the query or, for POST, a form body. Secrets and tokens never reach the log
line: the logged path of the routes that carry a token in their path is the route's template.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from ..access import (
    Token,
    bounded,
    invalid_token,
    issue_token,
    lookup_token,
    parse_grants,
    parse_period,
    parse_spaces,
    revoke_token,
    revoke_user_tokens,
    verify_library_secret,
)
from ..config import LibraryConfig
from ..errors import ApiError, BadRequest, InvalidParameter, NotFound
from ..keys import CONFIG, STORE
from ..middleware import LOG_PATH
from ..request import parse_query

TOKEN_PATH = "/api/v1/token"


class MethodNotAllowed(ApiError):
    status = 405
    code = "MethodNotAllowed"


class FailureBudget:
    """A per-library allowance of wrong secrets: ``burst`` at once, refilled at ``rate`` per second.

    Past it, a wrong answer is delayed ``delay`` seconds, so a burst of guesses crawls; the right
    secret is checked first and never waits, so an attack cannot lock the owner out.
    """

    def __init__(self, burst: float = 10, rate: float = 1.0, delay: float = 1.0) -> None:
        self.burst, self.rate, self.delay = burst, rate, delay
        self._left: dict[str, tuple[float, float]] = {}  # library -> (allowance, when)

    def spend(self, library: str) -> float:
        """Record a failure; the delay its answer must wait (0 while within the budget)."""
        now = time.monotonic()
        left, then = self._left.get(library, (self.burst, now))
        left = min(self.burst, left + (now - then) * self.rate) - 1
        self._left[library] = (max(left, -self.burst), now)  # bounded debt: a pause ends by itself
        return self.delay if left < 0 else 0.0


BUDGET = web.AppKey("token_failure_budget", FailureBudget)


async def _params(request: web.Request) -> dict[str, str]:
    params = parse_query(request.query_string)
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        for key, value in (await request.post()).items():
            if isinstance(value, str):
                params.setdefault(key, value)
    return params


async def _library(request: web.Request, library_id: str, secret: str) -> LibraryConfig:
    """The library whose secret is ``secret``; 400 when either is missing, 404 when they do not match."""
    if not library_id:
        raise BadRequest("library_id is required", code="EmptyLibraryId")
    if not secret:
        raise BadRequest("library_secret is required", code="EmptyLibrarySecret")
    lib = request.app[CONFIG].library(library_id)
    if lib is not None and verify_library_secret(lib, secret):
        return lib
    # unknown ids share one budget: a flood of made-up ids cannot grow the table
    delay = request.app[BUDGET].spend(lib.id if lib is not None else "")
    if delay:
        await asyncio.sleep(delay)
    raise NotFound("wrong library id or secret", code="WrongLibraryIdOrSecret")


def _body(token: str, period: int) -> web.Response:
    return web.json_response({"accessToken": token, "expiresIn": period},
                             headers={"Cache-Control": "no-store"})


async def create_token(request: web.Request) -> web.StreamResponse:
    q = await _params(request)
    lib = await _library(request, q.get("library_id", ""), q.get("library_secret", ""))
    token = Token(library=lib.id, period=parse_period(q.get("period")),
                  spaces=parse_spaces(lib, q.get("space_id", "")),
                  user_id=bounded("user_id", q.get("user_id", "")),
                  client_id=bounded("client_id", q.get("client_id", "")),
                  session_id=bounded("session_id", q.get("session_id", "")),
                  grants=parse_grants(q.get("grant", "")))
    return _body(await issue_token(request.app[STORE], token), token.period)


async def token_route(request: web.Request) -> web.StreamResponse:
    """``/api/v1/token/{LibraryId}/{AccessToken}``: POST renews, DELETE revokes. Every method lands
    here (405s included) so that the token in the path is hidden from the log line in all cases."""
    library, value = request.match_info["library"], request.match_info["token"]
    request[LOG_PATH] = f"{TOKEN_PATH}/{library}/{{AccessToken}}"
    if request.method == "POST":
        token = await lookup_token(request.app[STORE], value)  # restarts its period, as any use does
        if token is None or token.library != library:
            raise invalid_token()
        return _body(value, token.period)
    if request.method == "DELETE":
        # 204 whether or not it existed: revoking is idempotent, and answers no question about tokens
        await revoke_token(request.app[STORE], library, value)
        return web.Response(status=204)
    raise MethodNotAllowed(f"{request.method} is not allowed here: POST renews, DELETE revokes")


async def delete_user_tokens(request: web.Request) -> web.StreamResponse:
    """Revoke a user's tokens, narrowed to a client and/or a session when those are given."""
    q = parse_query(request.query_string)
    lib = await _library(request, request.match_info["library"], q.get("library_secret", ""))
    user_id = q.get("user_id", "")
    if not user_id:
        raise InvalidParameter("user_id is required: the user whose tokens are revoked")
    await revoke_user_tokens(request.app[STORE], lib.id, user_id, q.get("client_id", ""),
                             q.get("session_id", ""))
    return web.Response(status=204)


def add_token_routes(app: web.Application) -> None:
    """Register the token endpoints and their failure budget on ``app``."""
    app[BUDGET] = FailureBudget()
    router = app.router
    router.add_get(TOKEN_PATH, create_token, allow_head=False)
    router.add_post(TOKEN_PATH, create_token)
    router.add_route("*", TOKEN_PATH + "/{library}/{token:.+}", token_route)
    router.add_delete(TOKEN_PATH + "/{library}", delete_user_tokens)
