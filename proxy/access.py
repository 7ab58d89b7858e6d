"""Access decisions in one place: spaces, public-read libraries, tokens, signed asset URLs.

Tokens (API.md section 2) are ``secrets.token_urlsafe(24)`` (192 random bits), kept in the store under
``token:{token}`` as JSON (library, spaces, user, client, session, grants, period) with a TTL of
``period`` seconds that restarts on every successful use (one round trip: ``get_json_sliding``).
Tokens issued with a user id are also indexed under ``token-user:{library}:{sha256(user)}`` so that
``DELETE /api/v1/token/{LibraryId}?user_id=..`` finds them.

Signed asset links (``sign``, ``verify_signature``) live in the leaf module ``links.py``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from .config import LibraryConfig
from .errors import BadRequest, Forbidden, InvalidParameter
from .links import sign, signed_query, verify_signature  # noqa: F401 - re-exported
from .request import ID_RE, Credentials
from .store import Store

TOKENS = "token"            # store namespace: token -> Token JSON, TTL = period, sliding
USER_TOKENS = "token-user"  # store namespace: (library, user) -> set of that user's tokens
DEFAULT_PERIOD = 86400
MIN_PERIOD = 1200
MAX_PERIOD = 366 * 86400
PRUNE_ABOVE = 64            # a user's token index is pruned of expired tokens past this size
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_GRANT_RE = re.compile(r"^[A-Za-z0-9_]{1,32}$")
_FIELD_MAX = 256            # user, client and session ids: bounded, any text


@dataclass(frozen=True, slots=True)
class Grant:
    """The outcome of an access check: who, and whether what they get must be signed."""

    public: bool
    user_id: str = ""
    token_used: bool = False


@dataclass(frozen=True, slots=True)
class Token:
    """What a token stands for (stored as JSON; the token string itself is only the key)."""

    library: str
    period: int
    spaces: tuple[str, ...] = ()
    user_id: str = ""
    client_id: str = ""
    session_id: str = ""
    grants: tuple[str, ...] = ()

    @property
    def admin(self) -> bool:
        return "admin" in self.grants

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Any) -> Token | None:
        try:
            return cls(library=str(raw["library"]), period=int(raw["period"]),
                       spaces=tuple(map(str, raw.get("spaces", ()))), user_id=str(raw.get("user_id", "")),
                       client_id=str(raw.get("client_id", "")), session_id=str(raw.get("session_id", "")),
                       grants=tuple(map(str, raw.get("grants", ()))))
        except (KeyError, TypeError, ValueError):
            return None


def origin_space(lib: LibraryConfig, space: str) -> str:
    """The origin subfolder for ``space`` ("" for a single-tenant library); 400 on a wrong space."""
    if lib.multi_tenant:
        if space == "-":
            raise BadRequest("this library is multi-tenant: the request needs a SpaceId", code="EmptySpaceId")
        return space
    if space != "-":
        raise BadRequest("this library is single-tenant: use '-' as the SpaceId", code="NotMultiSpaceLibrary")
    return ""


def invalid_token() -> Forbidden:
    return Forbidden("the access token is unknown, expired or revoked, or not for this library",
                     code="InvalidAccessToken")


async def check_access(lib: LibraryConfig, space: str, creds: Credentials, store: Store) -> Grant:
    """Public-read libraries and spaces need nothing; private ones a valid token of this library that
    reaches ``space`` (``admin`` reaches every space). A successful use restarts the token's period."""
    if lib.space_public(space):
        return Grant(public=True)
    if not creds.access_token:
        raise BadRequest("this library is private: pass access_token or an Authorization: Bearer header",
                         code="EmptyAccessToken")
    token = await lookup_token(store, creds.access_token)
    if token is None or token.library != lib.id:
        raise invalid_token()
    if lib.multi_tenant and not token.admin and space not in token.spaces:
        raise Forbidden("the access token is not valid for this space", code="AccessTokenNotMatchSpace")
    # user_id acts only for an admin token issued with no user of its own (an admin backend acting for
    # its users); on any other token it would let a user claim to be someone else
    acting = creds.user_id if token.admin and not token.user_id and creds.user_id else token.user_id
    return Grant(public=False, user_id=acting[:_FIELD_MAX], token_used=True)


# ---- tokens -----------------------------------------------------------------------------------------


def verify_library_secret(lib: LibraryConfig, given: str) -> bool:
    """Constant-time comparison; a library with no configured secret issues no tokens."""
    expected = lib.secret.reveal()
    return bool(expected) and hmac.compare_digest(expected.encode(), given.encode())


def parse_period(raw: str | None) -> int:
    """Seconds: default 86400, below 1200 becomes 1200; not a whole number or over a year: 400."""
    if raw is None or raw == "":
        return DEFAULT_PERIOD
    if not raw.isdigit() or int(raw) > MAX_PERIOD:
        raise InvalidParameter(f"period must be a whole number of seconds up to {MAX_PERIOD}")
    return max(MIN_PERIOD, int(raw))


def parse_spaces(lib: LibraryConfig, raw: str) -> tuple[str, ...]:
    spaces = tuple(dict.fromkeys(s for s in raw.split(",") if s))
    if spaces and not lib.multi_tenant:
        raise BadRequest("this library is single-tenant: it has no spaces", code="NotMultiSpaceLibrary")
    if not all(ID_RE.match(s) for s in spaces):
        raise InvalidParameter("space_id: comma-separated space ids, each [A-Za-z0-9_-]{1,64}")
    return spaces


def parse_grants(raw: str) -> tuple[str, ...]:
    grants = tuple(dict.fromkeys(g for g in raw.split(",") if g))
    if not all(_GRANT_RE.match(g) for g in grants):
        raise InvalidParameter("grant: comma-separated names such as admin")
    return grants


def bounded(name: str, value: str) -> str:
    if len(value) > _FIELD_MAX:
        raise InvalidParameter(f"{name}: at most {_FIELD_MAX} characters")
    return value


def _user_key(library: str, user_id: str) -> str:
    return f"{library}:{hashlib.sha256(user_id.encode()).hexdigest()[:32]}"


async def issue_token(store: Store, token: Token) -> str:
    """A new random token standing for ``token``, valid for ``token.period`` seconds from now."""
    value = secrets.token_urlsafe(24)
    await store.set_json(TOKENS, value, token.to_json(), ttl=token.period)
    if token.user_id:
        index = _user_key(token.library, token.user_id)
        if await store.add_member(USER_TOKENS, index, value) > PRUNE_ABOVE:
            await _prune(store, index)
    return value


async def lookup_token(store: Store, value: str) -> Token | None:
    """The token's meaning, its period restarted; None when unknown, expired or revoked."""
    if not _TOKEN_RE.match(value):
        return None  # never ours: no store round trip, no odd key in the store
    return Token.from_json(await store.get_json_sliding(TOKENS, value, "period"))


async def revoke_token(store: Store, library: str, value: str) -> None:
    """Revoke one token of ``library`` (another library's token, or an unknown one, is left alone)."""
    if not _TOKEN_RE.match(value):
        return
    token = Token.from_json(await store.get_json(TOKENS, value))
    if token is None or token.library != library:
        return
    await store.delete(TOKENS, value)
    if token.user_id:
        await store.remove_members(USER_TOKENS, _user_key(library, token.user_id), value)


async def revoke_user_tokens(store: Store, library: str, user_id: str, client_id: str = "",
                             session_id: str = "") -> int:
    """Revoke ``user_id``'s tokens of ``library``, only those of ``client_id`` / ``session_id`` when
    given; the number revoked."""
    index = _user_key(library, user_id)
    revoked = 0
    gone: list[str] = []
    for value in await store.members(USER_TOKENS, index):
        token = Token.from_json(await store.get_json(TOKENS, value))
        if token is None or token.library != library or token.user_id != user_id:
            gone.append(value)
        elif (not client_id or token.client_id == client_id) and (
                not session_id or token.session_id == session_id):
            await store.delete(TOKENS, value)
            gone.append(value)
            revoked += 1
    await store.remove_members(USER_TOKENS, index, *gone)
    return revoked


async def _prune(store: Store, index: str) -> None:
    dead = [v for v in await store.members(USER_TOKENS, index) if await store.get_json(TOKENS, v) is None]
    await store.remove_members(USER_TOKENS, index, *dead)
