"""Access decisions in one place: spaces, public-read libraries, tokens, signed asset URLs.

Signed asset links use nginx's ``secure_link`` format so nginx can check them with no proxy round
trip: ``md5 = base64url(md5("{expires}{uri} {secret}"))`` without padding, ``expires`` a Unix time.
nginx side: ``secure_link $arg_md5,$arg_expires; secure_link_md5 "$secure_link_expires$uri <secret>";``
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass

from .config import LibraryConfig
from .errors import BadRequest, Forbidden
from .request import Credentials


@dataclass(frozen=True, slots=True)
class Grant:
    """The outcome of an access check: who, and whether what they get must be signed."""

    public: bool
    user_id: str = ""
    token_used: bool = False


def origin_space(lib: LibraryConfig, space: str) -> str:
    """The origin subfolder for ``space`` ("" for a single-tenant library); 400 on a wrong space."""
    if lib.multi_tenant:
        if space == "-":
            raise BadRequest("this library is multi-tenant: the request needs a SpaceId", code="EmptySpaceId")
        return space
    if space != "-":
        raise BadRequest("this library is single-tenant: use '-' as the SpaceId", code="NotMultiSpaceLibrary")
    return ""


def check_access(lib: LibraryConfig, space: str, creds: Credentials) -> Grant:
    """Public-read libraries and spaces need nothing; private ones a valid token."""
    if lib.space_public(space):
        return Grant(public=True)
    if not creds.access_token:
        raise BadRequest("this library is private: pass access_token or an Authorization: Bearer header",
                         code="EmptyAccessToken")
    # Token issuance and lookup arrive with the token store; until then no token is valid.
    raise Forbidden("the access token is not valid", code="InvalidAccessToken")


def sign(uri: str, expires: int, secret: str) -> str:
    digest = hashlib.md5(f"{expires}{uri} {secret}".encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def signed_query(uri: str, secret: str, ttl: int, now: float | None = None) -> str:
    """``md5=...&expires=...`` for ``uri``; expiry rounded up to a minute so repeat links are equal."""
    now = time.time() if now is None else now
    expires = (int(now + ttl) // 60 + 1) * 60
    return f"md5={sign(uri, expires, secret)}&expires={expires}"


def verify_signature(uri: str, md5: str, expires: str, secret: str, now: float | None = None) -> bool:
    """True when ``md5`` signs ``uri`` until ``expires`` and that time has not passed."""
    if not secret or not md5 or not expires.isdigit():
        return False
    now = time.time() if now is None else now
    if int(expires) < now:
        return False
    return hmac.compare_digest(sign(uri, int(expires), secret), md5)
