"""What a file is, by its name: a still or animated image, a video, or anything else (download link).

Classification is by extension on purpose: it costs no origin round trip before the decision, and a
file that is named like an image but does not decode answers 415 UnsupportedMedia (API section 5).
SVG, PDF and the like are not previewable: rasterising them means running a parser we do not need.
"""

from __future__ import annotations

from .types import MediaKind

IMAGE_EXTENSIONS = frozenset({
    "jpg", "jpeg", "jpe", "jfif", "png", "gif", "webp", "heic", "heif", "avif", "tif", "tiff", "bmp",
})
VIDEO_EXTENSIONS = frozenset({
    "mp4", "m4v", "mov", "webm", "mkv", "avi", "flv", "wmv", "mpg", "mpeg", "3gp", "ts", "ogv",
})

CONTENT_TYPES = {
    "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
    "avif": "image/avif",
}
_ORIGINAL_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "jfif": "image/jpeg",
    "png": "image/png", "gif": "image/gif", "webp": "image/webp", "heic": "image/heic",
    "heif": "image/heif", "avif": "image/avif", "tif": "image/tiff", "tiff": "image/tiff",
    "bmp": "image/bmp", "mp4": "video/mp4", "m4v": "video/mp4", "mov": "video/quicktime",
    "webm": "video/webm", "mkv": "video/x-matroska", "avi": "video/x-msvideo", "flv": "video/x-flv",
    "pdf": "application/pdf", "svg": "image/svg+xml", "txt": "text/plain", "zip": "application/zip",
    "json": "application/json", "html": "text/plain",  # never let an origin's HTML run on our host
}


def kind_of(extension: str) -> MediaKind:
    """The media kind of a file with this (lower-case) extension."""
    if extension in IMAGE_EXTENSIONS:
        return MediaKind.IMAGE
    if extension in VIDEO_EXTENSIONS:
        return MediaKind.VIDEO
    return MediaKind.FILE


def original_content_type(extension: str) -> str:
    """Content-Type for an original's bytes; unknown types download as octet-stream."""
    return _ORIGINAL_TYPES.get(extension, "application/octet-stream")
