"""Typed API errors: each carries its HTTP status, its SMH error code and a public message.

Deep code raises these; only the error middleware (``middleware.py``) turns them into the JSON body
``{"code", "message", "requestId"}``. Anything else that escapes is a bug: 500 InternalServerError.

    ApiError
    ├── BadRequest (400)      InvalidParameter, InvalidPath, EmptySpaceId, NotMultiSpaceLibrary,
    │                         EmptyAccessToken, EmptyLibraryId, EmptyLibrarySecret
    ├── Forbidden (403)       InvalidAccessToken, AccessTokenNotMatchSpace, NoPermission, InvalidSignature
    ├── NotFound (404)        LibraryNotFound, SpaceNotFound, FileNotFound, WrongLibraryIdOrSecret,
    │                         RouteNotFound
    ├── SourceTooLarge (413)
    ├── UnsupportedMedia (415)
    ├── RateLimitExceeded (429)
    ├── OriginError (502)
    ├── OriginTimeout (504)
    ├── ServiceUnavailable (503)   StoreUnavailable (the token store), RenderTimeout (render deadline)
    └── InternalServerError (500)
"""

from __future__ import annotations


class ApiError(Exception):
    status = 500
    code = "InternalServerError"
    default_message = "internal error"

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        if code:
            self.code = code
        self.headers = headers or {}
        super().__init__(f"{self.code}: {self.message}")


class BadRequest(ApiError):
    status = 400
    code = "InvalidParameter"


class InvalidParameter(BadRequest):
    code = "InvalidParameter"


class InvalidPath(BadRequest):
    code = "InvalidPath"
    default_message = "the file path is not valid"


class Forbidden(ApiError):
    status = 403
    code = "NoPermission"
    default_message = "access denied"


class NotFound(ApiError):
    status = 404
    code = "RouteNotFound"
    default_message = "no such route"


class FileNotFound(NotFound):
    code = "FileNotFound"
    default_message = "no such file"


class SourceTooLarge(ApiError):
    status = 413
    code = "SourceTooLarge"
    default_message = "the source is larger than the configured limits"


class UnsupportedMedia(ApiError):
    status = 415
    code = "UnsupportedMedia"
    default_message = "the file cannot be decoded"


class RateLimitExceeded(ApiError):
    status = 429
    code = "RateLimitExceeded"
    default_message = "too many requests in the queue; retry later"


class OriginError(ApiError):
    status = 502
    code = "OriginError"
    default_message = "the origin failed"


class OriginTimeout(ApiError):
    status = 504
    code = "OriginTimeout"
    default_message = "the origin did not answer in time"


class ServiceUnavailable(ApiError):
    """This host cannot serve the request now; another host, or this one later, can."""

    status = 503
    code = "ServiceUnavailable"
    default_message = "the service is unavailable; retry"


class StoreUnavailable(ServiceUnavailable):
    """The store did not answer: access cannot be decided, so it is refused (fail closed)."""

    default_message = "the token store is unavailable"


class RenderTimeout(ServiceUnavailable):
    """The render did not finish within ``limits.render_deadline`` (checked between its steps)."""

    code = "RenderTimeout"
    default_message = "the render took longer than the configured deadline"


class InternalServerError(ApiError):
    pass
