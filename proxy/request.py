"""Parse a request's raw path and query into frozen values (pure: no I/O, no aiohttp).

The path is taken raw (still percent-encoded) and decoded exactly once here, so that ``%2F`` becomes
a separator and ``%2e%2e`` becomes ``..`` *before* the segment checks: no spelling of a traversal
gets past them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from .errors import InvalidParameter, InvalidPath, NotFound
from .types import Fit, MediaKind, Sizing

ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FORMATS = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png", "webp": "webp", "avif": "avif", "gif": "gif"}
_DIGITS = re.compile(r"^[0-9]{1,9}$")
MAX_PATH_BYTES = 4096
ANIMATED_FAMILIES = frozenset({"gif", "webp"})  # output formats that can keep an animation
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file of a library: ``space`` is ``-`` for a single-tenant library; ``path`` is '/'-joined."""

    library: str
    space: str
    path: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def extension(self) -> str:
        name = self.name
        return name.rsplit(".", 1)[-1].lower() if "." in name else ""


@dataclass(frozen=True, slots=True)
class PreviewOptions:
    """Everything in the query that changes the output pixels, parsed and range-checked."""

    sizing: Sizing = Sizing()  # noqa: RUF009 - frozen, so one shared default is safe
    frame_number: int = 0     # 0: every frame
    format: str = ""          # "": the source's family
    debug: str = ""           # "faces": the face debug view

    def canonical(self) -> str:
        """The options' canonical form (``format`` resolved first: see ``RenderRequest``)."""
        parts = [self.sizing.canonical()]
        if self.frame_number and self.format in ANIMATED_FAMILIES:  # a still output has no frames
            parts.append(f"n{self.frame_number}")
        parts.append(f"f{self.format}")
        if self.debug:
            parts.append(f"d{self.debug}")
        return ",".join(parts)

    def query(self) -> str:
        """The options as the query that ``parse_options`` reads back into these same options."""
        sizing = self.sizing
        parts = {Fit.SQUARE: [f"size={sizing.size}"], Fit.SCALE: [f"scale={sizing.size}"],
                 Fit.BOX: [f"width_size={sizing.width}"] * bool(sizing.width)
                 + [f"height_size={sizing.height}"] * bool(sizing.height)}.get(sizing.fit, [])
        if self.frame_number:
            parts.append(f"frame_number={self.frame_number}")
        if self.format:
            parts.append(f"format={self.format}")
        if self.debug:
            parts.append(f"debug={self.debug}")
        return "&".join(parts)


@dataclass(frozen=True, slots=True)
class RenderRequest:
    """One render, fully described: the file, its source version, the options with the output format
    resolved, and the service settings that change these pixels. Its canonical form is the only input
    of the cache key, and an asset URL carries enough of it for any host to make the render again."""

    ref: FileRef
    version: str
    options: PreviewOptions  # ``format`` is the output family, never ""
    kind: MediaKind
    settings: str = ""       # e.g. "q85" or "q85,yunet:640": only settings that reach these pixels

    def canonical(self) -> str:
        parts = [self.ref.library, self.ref.space, self.ref.path, self.version, self.options.canonical(),
                 self.settings]
        return "\x1f".join(parts)


@dataclass(frozen=True, slots=True)
class Credentials:
    access_token: str = ""
    user_id: str = ""


def decode_file_path(raw: str) -> str:
    """Percent-decode a raw file path once and check every segment; return the '/'-joined path."""
    if len(raw) > 3 * MAX_PATH_BYTES:
        raise InvalidPath("the file path is too long")
    try:
        path = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidPath("the file path is not valid UTF-8") from None
    return check_file_path(path)


def check_file_path(path: str) -> str:
    """``path`` (decoded) when every segment is a plain name that stays inside its root; else 400."""
    if not path:
        raise InvalidPath("the file path is empty")
    if "\x00" in path or "\\" in path:
        raise InvalidPath("the file path holds a NUL or a backslash")
    if _CONTROL.search(path):
        raise InvalidPath("the file path holds a control character")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidPath("the file path holds an empty, '.' or '..' segment")
    return path


def parse_file_route(raw_rest: str) -> FileRef:
    """Split ``{LibraryId}/{SpaceId}/{FilePath}`` (raw, after ``/api/v1/file/``) into a FileRef."""
    parts = raw_rest.split("/", 2)
    if len(parts) < 3:
        raise NotFound("expected /api/v1/file/{LibraryId}/{SpaceId}/{FilePath}")
    library, space = unquote(parts[0]), unquote(parts[1])
    if not ID_RE.match(library):
        raise NotFound(f"no library {library[:64]!r}", code="LibraryNotFound")
    if space != "-" and not ID_RE.match(space):
        raise InvalidParameter("SpaceId must be '-' or match [A-Za-z0-9_-]{1,64}")
    return FileRef(library, space, decode_file_path(parts[2]))


def _whole(query: dict[str, str], name: str, low: int, high: int) -> int:
    value = query[name].strip()
    if not _DIGITS.match(value) or not low <= int(value) <= high:
        raise InvalidParameter(f"{name} must be a whole number from {low} to {high}, got {value[:20]!r}")
    return int(value)


def parse_query(raw_query: str) -> dict[str, str]:
    """The query as a dict, first value of each name winning; blank values kept (``?preview``)."""
    query: dict[str, str] = {}
    try:
        pairs = parse_qsl(raw_query, keep_blank_values=True, errors="strict", max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise InvalidParameter("the query string cannot be parsed") from None
    for key, value in pairs:
        query.setdefault(key, value)
    return query


def parse_options(query: dict[str, str]) -> PreviewOptions:
    """Sizing by precedence (size, scale, width/height, none); frame_number; format; debug."""
    if "size" in query:
        sizing = Sizing(Fit.SQUARE, size=_whole(query, "size", 1, 4096))
    elif "scale" in query:
        sizing = Sizing(Fit.SCALE, size=_whole(query, "scale", 1, 100))
    elif "width_size" in query or "height_size" in query:
        width = _whole(query, "width_size", 1, 8192) if "width_size" in query else 0
        height = _whole(query, "height_size", 1, 8192) if "height_size" in query else 0
        sizing = Sizing(Fit.BOX, width=width, height=height)
    else:
        sizing = Sizing()
    frames = _whole(query, "frame_number", 1, 100) if "frame_number" in query else 0
    fmt = ""
    if query.get("format"):
        fmt = FORMATS.get(query["format"].lower(), "")
        if not fmt:
            raise InvalidParameter("format must be one of jpeg, png, webp, avif, gif")
    debug = query.get("debug", "")
    if debug and debug != "faces":
        raise InvalidParameter("debug must be 'faces'")
    return PreviewOptions(sizing=sizing, frame_number=frames, format=fmt, debug=debug)


def is_preview(query: dict[str, str]) -> bool:
    """``?preview``, ``?preview=`` and ``?preview=1`` all ask for a preview (``preview=0`` does not)."""
    return "preview" in query and query["preview"].lower() not in ("0", "false", "no")


def accepted_format(accept: str, offer: tuple[str, ...]) -> str:
    """The first format of ``offer`` that ``accept`` names as ``image/<format>`` with a q above 0, or "".

    Wildcards (``*/*``, ``image/*``) name no format: every browser sends them, including those
    that cannot decode AVIF, so only an explicit media type counts.
    """
    named: set[str] = set()
    for item in accept.lower().split(","):
        media, *params = item.split(";")
        q = next((p.strip()[2:] for p in params if p.strip().startswith("q=")), "1")
        try:
            acceptable = float(q) > 0
        except ValueError:
            acceptable = False
        if acceptable and media.strip().startswith("image/"):
            named.add(media.strip()[6:])
    return next((fmt for fmt in offer if fmt in named), "")


def parse_credentials(query: dict[str, str], authorization: str | None) -> Credentials:
    token = query.get("access_token", "")
    if not token and authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
    return Credentials(access_token=token, user_id=query.get("user_id", ""))
