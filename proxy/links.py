"""Asset URLs and their signatures: a leaf module (no pyvips, no OpenCV, no aiohttp), so that
``nginx-conf`` and the operator tools import it cheaply.

A render's asset URL names its file in the cache folder *and* carries what any host needs to make
that render again (API.md section 10)::

    {asset_prefix}[p/]{library}/ab/cd/{key}/{description}.{ext}    (URL)
    [p/]{library}/ab/cd/{key}.{ext}                                  (file in cache.dir)

``description`` is the unpadded base64url of ``space, path, version, options`` (one per line; the
options as the query ``parse_options`` reads). nginx tries the file and passes a miss to the
service, which decodes the description, renders, and answers the image: any host serves any asset.
The key is the hash of the request model's canonical form (``request.RenderRequest``), so a
description that does not hash to the key in its own URL is not that render (another host's
settings, a changed source, an edited link): it is rendered as described but never cached as
immutable under that URL.

Signed links use nginx's ``secure_link`` format so nginx checks them with no proxy round trip:
``md5 = base64url(md5("{expires}{uri} {secret}"))`` without padding, ``expires`` a Unix time, ``uri``
the decoded path (nginx's ``$uri``), ``secret`` = ``[cache] sign_secret``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from .config import LibraryConfig

ORIGINALS = "o/"  # asset_prefix + "o/{library}/{space}/{path}": originals, for download links
PRIVATE = "p/"    # asset_prefix + "p/...": renders of private content, served only with a signature
EXTENSIONS = ("jpeg", "png", "gif", "webp", "avif")
_EXT = "|".join(EXTENSIONS)
# (p/)(library)/(ab)/(cd)/(key)[/(description)].(ext): the description-less form is the file's own
# path (and the URL shape before descriptions; such links still resolve while the file is there)
RENDER_URL = re.compile(r"^(p/)?([A-Za-z0-9_-]{1,64})/([0-9a-f]{2})/([0-9a-f]{2})/(\3\4[0-9a-f]{36})"
                        rf"(?:/([A-Za-z0-9_-]{{1,12000}}))?\.({_EXT})$")
# a described render URL after "{asset_prefix}[p/]", for nginx (captures: library, ab, cd, key, ext)
NGINX_RENDER_URL = (r"([A-Za-z0-9_-]{1,64})/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{40})"
                    rf"/[A-Za-z0-9_-]+\.({_EXT})$")


@dataclass(frozen=True, slots=True)
class Description:
    """What an asset URL says about its render (everything but the library, which is in the path)."""

    space: str    # "-" for a single-tenant library
    path: str
    version: str
    options: str  # PreviewOptions.query()


@dataclass(frozen=True, slots=True)
class AssetPath:
    rel: str                          # the file in the cache folder: [p/]{library}/ab/cd/{key}.{ext}
    private: bool
    library: str
    key: str
    ext: str
    description: Description | None   # None: a bare file path (no description: cannot be re-made)


def has_private(lib: LibraryConfig) -> bool:
    """Is any of the library private (itself, or one of its spaces)?"""
    return not lib.public_read or any(space.public_read is False for space in lib.spaces.values())


def key_path(key: str, ext: str, library: str = "") -> str:
    """``[library/]ab/cd/<key>.<ext>``: the library's folder lets an operator purge one library."""
    shard = f"{key[:2]}/{key[2:4]}/{key}.{ext}"
    return f"{library}/{shard}" if library else shard


def describe(description: Description) -> str:
    text = "\n".join((description.space, description.path, description.version, description.options))
    return base64.urlsafe_b64encode(text.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def render_uri(prefix: str, rel: str, description: Description) -> str:
    """The asset URI (path only, percent-safe) of the render stored at ``rel``."""
    stem, _, ext = rel.rpartition(".")
    return f"{prefix}{stem}/{describe(description)}.{ext}"


def parse_render_uri(rest: str) -> AssetPath | None:
    """``rest`` (the URI after ``asset_prefix``) as an AssetPath; None when it is not a render's."""
    m = RENDER_URL.match(rest)
    if m is None:
        return None
    private, library, _ab, _cd, key, encoded, ext = m.groups()
    rel = f"{private or ''}{key_path(key, ext, library)}"
    return AssetPath(rel, bool(private), library, key, ext, _decode(encoded) if encoded else None)


def _decode(encoded: str) -> Description | None:
    try:
        text = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    fields = text.split("\n")
    return Description(*fields) if len(fields) == 4 else None


def original_uri(prefix: str, library: str, space: str, path: str) -> str:
    return f"{prefix}{ORIGINALS}{library}/{space}/{quote(path)}"


# ---- signatures ---------------------------------------------------------------------------------------


def sign(uri: str, expires: int, secret: str) -> str:
    """nginx secure_link's ``md5``: unpadded base64url of md5("{expires}{uri} {secret}")."""
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
