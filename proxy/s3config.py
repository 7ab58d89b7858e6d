"""``[libraries.s3]``: how to reach an S3-compatible store, checked the way ``config.py`` checks the rest
(every problem collected, none raised), and where a library's keys come from.

Keys: the config's own pair, else ``PREVIEW_PROXY_S3_<LIBRARY>_ACCESS_KEY_ID`` / ``_SECRET_ACCESS_KEY``
(the library id upper-cased, ``-`` written ``_``), else ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
(with ``AWS_SESSION_TOKEN``), else none: the client then asks botocore's chain (shared credentials files,
web identity, container and instance roles). A pair is taken whole, never half from one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .types import Secret

S3_ENV_PREFIX = "PREVIEW_PROXY_S3_"
_KEYS = ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")
_BUCKET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$")


@dataclass(frozen=True, slots=True)
class S3Config:
    """How to reach an S3-compatible store; the bucket is named elsewhere (the origin URL)."""

    endpoint: str = ""          # scheme://host[:port]; "" = AWS S3 for the region
    region: str = "us-east-1"
    addressing: str = ""        # "path" or "virtual" (bucket.endpoint); "" = virtual on AWS, else path
    access_key_id: str = ""     # "" (with no secret either): botocore's chain (roles, shared files)
    secret_access_key: Secret = field(default_factory=lambda: Secret(""))
    session_token: Secret = field(default_factory=lambda: Secret(""))
    credentials_from: str = ""  # where the keys were found, for messages ("" = botocore's chain)


def env_name(library_id: str, key: str) -> str:
    """``PREVIEW_PROXY_S3_<LIBRARY>_<KEY>`` for a library id."""
    return f"{S3_ENV_PREFIX}{library_id.upper().replace('-', '_')}_{key}"


def parse_s3_origin(origin: str) -> tuple[str, str] | None:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")``; None when it is not valid."""
    bucket, _, prefix = origin[len("s3://"):].partition("/")
    segments = [s for s in prefix.split("/") if s]
    if not _BUCKET_RE.match(bucket) or any(s in (".", "..") for s in segments):
        return None
    return bucket, "".join(s + "/" for s in segments)


def s3_config(where: str, library_id: str, raw: Any, env: dict[str, str], problems: list[str]) -> S3Config:
    """The ``[libraries.s3]`` table of one library (``raw``: None when absent) with its keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where} s3: expected a table ([libraries.s3])")
        raw = {}
    known = {"endpoint", "region", "addressing", "access_key_id", "secret_access_key"}
    for key in raw:
        if key not in known:
            problems.append(f"{where} s3.{key}: unknown key (expected one of {', '.join(sorted(known))})")
    values = {key: raw.get(key, "") for key in known}
    for key, value in values.items():
        if not isinstance(value, str):
            problems.append(f"{where} s3.{key}: expected a string")
            values[key] = ""
    endpoint = values["endpoint"].rstrip("/")
    if endpoint and not re.match(r"^https?://[^/\s]+(/\S*)?$", endpoint):
        hint = f': write "https://{endpoint}" (or http:// for a local store)' if "://" not in endpoint else ""
        problems.append(f"{where} s3.endpoint: {endpoint!r} is not an http(s):// URL{hint}")
    if values["addressing"] not in ("", "path", "virtual"):
        problems.append(f'{where} s3.addressing: "path" or "virtual" (bucket.endpoint), not '
                        f'{values["addressing"]!r}')
    if values["region"] and not re.match(r"^[a-z0-9-]{1,40}$", values["region"]):
        problems.append(f"{where} s3.region: {values['region']!r} is not a region name (e.g. eu-west-1)")
    key_id, secret, token, found = _credentials(where, library_id, values, env, problems)
    return S3Config(endpoint=endpoint, region=values["region"] or "us-east-1",
                    addressing=values["addressing"], access_key_id=key_id,
                    secret_access_key=Secret(secret), session_token=Secret(token), credentials_from=found)


def _credentials(where: str, library_id: str, values: dict[str, str], env: dict[str, str],
                 problems: list[str]) -> tuple[str, str, str, str]:
    """(key id, secret, session token, where found) by the order in this module's docstring."""
    pairs = [("the config", values["access_key_id"], values["secret_access_key"], ""),
             (f"{env_name(library_id, '*')} (environment)", env.get(env_name(library_id, _KEYS[0]), ""),
              env.get(env_name(library_id, _KEYS[1]), ""), ""),
             ("AWS_ACCESS_KEY_ID (environment)", env.get("AWS_ACCESS_KEY_ID", ""),
              env.get("AWS_SECRET_ACCESS_KEY", ""), env.get("AWS_SESSION_TOKEN", ""))]
    for place, key_id, secret, token in pairs:
        if bool(key_id) != bool(secret):
            problems.append(f"{where} s3: {place} has an access key id without a secret access key, "
                            "or a secret without a key id: give both")
            return "", "", "", ""
        if key_id:
            return key_id, secret, token, place
    return "", "", "", ""


def unknown_s3_variables(library_ids: list[str], env: dict[str, str]) -> list[str]:
    """``PREVIEW_PROXY_S3_*`` variables that name no S3 library's key (a typo would otherwise fall
    through to other credentials without a word)."""
    expected = {env_name(lib, key) for lib in library_ids for key in _KEYS}
    return [f"{name} (environment): names no key of an s3:// library (expected one of "
            f"{', '.join(sorted(expected)) or 'none: no library has an s3:// origin'})"
            for name in sorted(env) if name.startswith(S3_ENV_PREFIX) and name not in expected]


RENDER_STORE_ID = "render-store"  # its keys' variables: PREVIEW_PROXY_S3_RENDER_STORE_ACCESS_KEY_ID, ...


@dataclass(frozen=True, slots=True)
class RenderStoreConfig:
    """``[render_store]``: the optional render store shared by every host (``renderstore.py``)."""

    bucket: str
    prefix: str
    s3: S3Config


def render_store_config(raw: Any, env: dict[str, str], problems: list[str]) -> RenderStoreConfig | None:
    """``[render_store] url = "s3://bucket/prefix"`` and the ``[libraries.s3]`` keys beside it; None when
    the section or its url is absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append("[render_store]: expected a table")
        return None
    url = raw.get("url", "")
    if not url:
        return None
    where = "[render_store]"
    parsed = parse_s3_origin(url) if isinstance(url, str) and url.startswith("s3://") else None
    if parsed is None:
        problems.append(f"{where} url: expected s3://bucket or s3://bucket/prefix, got {url!r}")
        return None
    s3 = s3_config(where, RENDER_STORE_ID, {k: v for k, v in raw.items() if k != "url"}, env, problems)
    return RenderStoreConfig(parsed[0], parsed[1], s3)
