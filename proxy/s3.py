"""A small S3 client over aiohttp: requests signed by botocore's SigV4 signer, failures typed.

One ``S3Client`` per bucket. It speaks the handful of calls this service needs (HEAD and streamed GET
of an object, PUT, DELETE, ListObjectsV2, HEAD bucket, presigned URLs) to AWS S3 and to the
S3-compatible stores (Tencent COS, MinIO, SeaweedFS, Cloudflare R2). botocore only signs: its request
machinery is blocking, and the service already owns an asyncio HTTP stack with the timeouts it wants.

Failures are the API's own errors, so an origin can let them through: a missing key is
``FileNotFound`` (404), a slow store ``OriginTimeout`` (504), anything else ``S3Error`` (an
``OriginError``, 502) whose message says which trouble it is (credentials refused, bucket missing,
wrong region, clock skew, an endpoint that is not S3) in words a user can act on, never a secret.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from yarl import URL

from .errors import FileNotFound, OriginError, OriginTimeout, SourceTooLarge
from .httpclient import origin_session, origin_timeout
from .s3config import S3Config

CHUNK = 256 * 1024
MAX_ERROR_BODY = 64 * 1024
MAX_LIST_BODY = 16 * 1024**2


class S3Error(OriginError):
    """The store refused or failed a request; ``s3_code`` is its error code ("" when it sent none)."""

    def __init__(self, message: str, s3_code: str = "") -> None:
        super().__init__(message)
        self.s3_code = s3_code


@dataclass(frozen=True, slots=True)
class S3Object:
    key: str
    size: int           # -1 when the store did not say
    etag: str           # as the store sent it, quotes included ("" when none)
    last_modified: str = ""


def _q(value: str) -> str:
    """SigV4's encoding: everything but unreserved characters, for query names and values."""
    return quote(value, safe="-_.~")


class S3Client:
    """Signed requests to one bucket. The session is created on first use, on the running loop."""

    def __init__(self, config: S3Config, bucket: str, *, timeout: float = 15.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.bucket = bucket
        self.region = config.region or "us-east-1"
        endpoint = (config.endpoint or f"https://s3.{self.region}.amazonaws.com").rstrip("/")
        parts = urlsplit(endpoint)
        virtual = config.addressing == "virtual" or (not config.addressing and not config.endpoint)
        self.base = (f"{parts.scheme}://{bucket}.{parts.netloc}{parts.path}" if virtual
                     else f"{endpoint}/{quote(bucket, safe='')}")
        self.endpoint = endpoint
        self.timeout = origin_timeout(timeout)
        self._session = session
        self._own_session = session is None
        self._credentials: Any = None   # botocore Credentials (possibly refreshable), or None: unsigned
        self._resolved = False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = origin_session(self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()

    def url(self, key: str, query: dict[str, str] | None = None) -> str:
        """The object's URL, percent-encoded exactly as it is signed and sent."""
        url = f"{self.base}/{quote(key, safe='/~')}" if key else f"{self.base}/"
        if query:
            url += "?" + "&".join(f"{_q(k)}={_q(v)}" for k, v in sorted(query.items()))
        return url

    # ---- credentials and signing -------------------------------------------------------------

    async def _frozen(self) -> ReadOnlyCredentials | None:
        """Keys to sign with: the configured ones, else botocore's chain (shared files, web identity,
        container and instance roles), refreshed off the event loop; None: send unsigned."""
        if not self._resolved:
            if self.config.access_key_id and self.config.secret_access_key:
                self._credentials = Credentials(self.config.access_key_id,
                                                self.config.secret_access_key.reveal(),
                                                self.config.session_token.reveal() or None)
            else:
                self._credentials = await asyncio.to_thread(_default_chain)
            self._resolved = True
        creds = self._credentials
        if creds is None:
            return None
        if getattr(creds, "refresh_needed", lambda: False)():
            return await asyncio.to_thread(creds.get_frozen_credentials)
        return creds.get_frozen_credentials()

    async def _signed_headers(self, method: str, url: str, body: bytes, headers: dict[str, str]
                              ) -> dict[str, str]:
        creds = await self._frozen()
        if creds is None:
            return headers
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        S3SigV4Auth(creds, "s3", self.region).add_auth(request)
        return dict(request.headers.items())

    async def presign(self, key: str, expires: int = 300, method: str = "GET") -> str:
        """A URL that lets anyone ``method`` the object for ``expires`` seconds without credentials."""
        creds = await self._frozen()
        if creds is None:
            return self.url(key)
        request = AWSRequest(method=method, url=self.url(key))
        S3SigV4QueryAuth(creds, "s3", self.region, expires=expires).add_auth(request)
        return request.url

    # ---- requests ----------------------------------------------------------------------------

    async def _send(self, method: str, key: str, *, query: dict[str, str] | None = None, body: bytes = b"",
                    headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """One signed request; a response whose status is 2xx or 304, else a typed error."""
        url = self.url(key, query)
        signed = await self._signed_headers(method, url, body, dict(headers or {}))
        try:
            resp = await self.session.request(method, URL(url, encoded=True), data=body or None,
                                              headers=signed, allow_redirects=False)
        except TimeoutError:
            raise OriginTimeout(f"the S3 endpoint {self.endpoint} did not answer in time") from None
        except aiohttp.ClientConnectorError as exc:
            raise S3Error(f"the S3 endpoint {self.endpoint} cannot be reached "
                          f"({exc.os_error.strerror or type(exc.os_error).__name__}): check the endpoint "
                          "and that the store is running") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise S3Error(f"the S3 endpoint {self.endpoint} failed: {type(exc).__name__}") from None
        if resp.status == 304 or 200 <= resp.status < 300:
            return resp
        try:
            raw = await resp.content.read(MAX_ERROR_BODY) if method != "HEAD" else b""
        except (aiohttp.ClientError, TimeoutError):
            raw = b""
        finally:
            resp.release()
        code, detail = _error_fields(raw)
        if method == "HEAD" and not code and resp.status in (400, 403, 404):
            # a HEAD answer has no body to say why: ask again with a GET, whose error body does
            (await self._send("GET", key, query=query, headers={"Range": "bytes=0-0"})).release()
            raise S3Error(f"the S3 store answered {resp.status} to HEAD but not to GET")
        raise self._error(resp.status, code, detail, resp.headers, key, bodyless=not raw.strip())

    def _error(self, status: int, code: str, detail: dict[str, str], headers: Any, key: str, *,
               bodyless: bool) -> Exception:
        """The typed error of an S3 answer. A body that is no S3 error comes from another kind of
        server (a wrong endpoint): its 404 page says nothing about the key or the bucket."""
        where = f"bucket {self.bucket!r} at {self.endpoint}"
        region = detail.get("Region") or headers.get("x-amz-bucket-region", "")
        region = "" if region == self.region else region
        if status == 404 and (code == "NoSuchKey" or (bodyless and not code)) and key:
            return FileNotFound()
        if code == "NoSuchBucket" or (status == 404 and bodyless and not code):
            return S3Error(f"the {where} does not exist (NoSuchBucket): check the bucket name "
                           "in origin = \"s3://...\"", code or "NoSuchBucket")
        if code in ("InvalidAccessKeyId", "InvalidAccessKeyID"):
            return S3Error(f"the {where} does not know the access key id (InvalidAccessKeyId): "
                           "check access_key_id", code)
        if code == "SignatureDoesNotMatch":
            return S3Error(f"the {where} refused the request signature (SignatureDoesNotMatch): "
                           "the secret access key is wrong, or the region or endpoint is", code)
        if code in ("RequestTimeTooSkewed", "RequestExpired"):
            return S3Error(f"this machine's clock is too far from the S3 store's ({code}): "
                           "set the clock right (NTP)", code)
        if code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException"
                    ) or status in (301, 307) or region:
            told = f" the bucket is in {region!r}," if region else ""
            return S3Error(f"wrong region for the {where} ({code or status}):{told} the config says "
                           f"region = {self.region!r}", code or "WrongRegion")
        if code == "AccessDenied" or (status == 403 and bodyless and not code):
            return S3Error(f"the {where} denied access (AccessDenied): the credentials may not read "
                           "it, or none were found", code or "AccessDenied")
        if not code:
            return S3Error(f"the endpoint {self.endpoint} did not answer like an S3 store "
                           f"(status {status}): check the endpoint and addressing", "")
        return S3Error(f"the {where} answered {status} ({code})", code)

    async def head(self, key: str, *, etag: str = "") -> S3Object | None:
        """The object's size and ETag; with ``etag``, None when it is unchanged (304)."""
        resp = await self._send("HEAD", key, headers={"If-None-Match": etag} if etag else None)
        resp.release()
        return None if resp.status == 304 else _object(key, resp)

    @asynccontextmanager
    async def open(self, key: str, *, max_bytes: int = 0
                   ) -> AsyncIterator[tuple[S3Object, AsyncIterator[bytes]]]:
        """A streamed GET: the object's metadata and its chunks. Over ``max_bytes`` (when set):
        ``SourceTooLarge`` from the Content-Length, before the body is read, or while reading it."""
        resp = await self._send("GET", key)
        try:
            obj = _object(key, resp)
            if max_bytes and obj.size > max_bytes:
                raise SourceTooLarge(f"the object is {obj.size} bytes, over the limit of {max_bytes}")
            yield obj, _chunks(resp, max_bytes)
        finally:
            resp.release()

    async def get(self, key: str, *, max_bytes: int = 0) -> tuple[S3Object, bytes]:
        """The whole object (``max_bytes``: as ``open``); a short body is an error, not a source."""
        body = bytearray()
        async with self.open(key, max_bytes=max_bytes) as (obj, chunks):
            async for chunk in chunks:
                body += chunk
        if obj.size >= 0 and len(body) != obj.size:
            raise S3Error("the S3 store sent a body shorter than its Content-Length")
        return obj, bytes(body)

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> str:
        """Store ``data`` under ``key``; its new ETag."""
        resp = await self._send("PUT", key, body=data, headers={"Content-Type": content_type})
        resp.release()
        return resp.headers.get("ETag", "")

    async def delete(self, key: str) -> None:
        """Remove the object (no error when it is already gone)."""
        (await self._send("DELETE", key)).release()

    async def create_bucket(self) -> None:
        """Create the bucket (tests and first set-up; the service itself never creates buckets)."""
        (await self._send("PUT", "")).release()

    async def check(self, prefix: str = "") -> None:
        """Reach the bucket with a one-key list: raises the typed error a request would meet."""
        await self._list_page(prefix, "", 1)

    async def list(self, prefix: str = "", *, page_size: int = 1000) -> AsyncIterator[S3Object]:
        """Every object under ``prefix``, in key order, page by page (ListObjectsV2)."""
        token = ""
        while True:
            objects, token = await self._list_page(prefix, token, page_size)
            for obj in objects:
                yield obj
            if not token:
                return

    async def _list_page(self, prefix: str, token: str, size: int) -> tuple[list[S3Object], str]:
        query = {"list-type": "2", "max-keys": str(size), "prefix": prefix}
        if token:
            query["continuation-token"] = token
        resp = await self._send("GET", "", query=query)
        try:
            raw = await resp.content.read(MAX_LIST_BODY)
        except TimeoutError:
            raise OriginTimeout(f"the S3 endpoint {self.endpoint} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise S3Error(f"the S3 endpoint failed while listing: {type(exc).__name__}") from None
        finally:
            resp.release()
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            raise S3Error(f"the endpoint {self.endpoint} did not answer the listing like S3") from None
        ns = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
        objects = [S3Object(c.findtext(f"{ns}Key", ""), int(c.findtext(f"{ns}Size", "-1")),
                            c.findtext(f"{ns}ETag", ""), c.findtext(f"{ns}LastModified", ""))
                   for c in root.iter(f"{ns}Contents")]
        truncated = root.findtext(f"{ns}IsTruncated", "false") == "true"
        return objects, (root.findtext(f"{ns}NextContinuationToken", "") if truncated else "")


def _default_chain() -> Any:
    """botocore's own credential chain (blocking: it may ask an instance metadata service)."""
    import botocore.session

    return botocore.session.Session().get_credentials()


def _object(key: str, resp: aiohttp.ClientResponse) -> S3Object:
    size = resp.content_length if resp.content_length is not None else -1
    return S3Object(key, size, resp.headers.get("ETag", ""), resp.headers.get("Last-Modified", ""))


def _error_fields(raw: bytes) -> tuple[str, dict[str, str]]:
    """An S3 error body's Code and its other fields ("" and {} when it is not one)."""
    try:
        root = ET.fromstring(raw) if raw else None
    except ET.ParseError:
        return "", {}
    if root is None or root.tag != "Error":
        return "", {}
    return root.findtext("Code", ""), {child.tag: child.text or "" for child in root}


async def _chunks(resp: aiohttp.ClientResponse, max_bytes: int) -> AsyncIterator[bytes]:
    """The body chunk by chunk, failures typed, never more than ``max_bytes`` (when set)."""
    seen = 0
    try:
        async for chunk in resp.content.iter_chunked(CHUNK):
            seen += len(chunk)
            if max_bytes and seen > max_bytes:
                raise SourceTooLarge(f"the object is over the limit of {max_bytes} bytes")
            yield chunk
    except TimeoutError:
        raise OriginTimeout("the S3 store stopped sending in time") from None
    except aiohttp.ClientError as exc:
        raise S3Error(f"the S3 store failed while sending: {type(exc).__name__}") from None
