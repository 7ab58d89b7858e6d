"""Origins behind one interface: a local folder, or an http(s):// base URL.

Paths are ``(space, rel)``: ``space`` is "" for a single-tenant library, else the tenant's folder
under the origin, which is then the root nothing may leave. ``stat`` answers the source's version
(what the cache key is made of) without reading the body; ``fetch`` gets the bytes within
``limits.max_source_bytes``; ``stream`` serves an original for a download. Every failure is a typed
ApiError: 404 FileNotFound, 413 SourceTooLarge, 502 OriginError, 504 OriginTimeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat as stat_mod
import tempfile
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import aiohttp

from .config import Config, LibraryConfig, LimitsConfig, S3Config
from .errors import FileNotFound, OriginError, OriginTimeout, SourceTooLarge
from .httpclient import origin_session, origin_timeout
from .media import kind_of
from .render import Source
from .types import MediaKind

CHUNK = 256 * 1024
MAX_REDIRECTS = 3
SPOOL_PREFIX = ".src."
SPOOL_ABANDONED = 3600  # seconds: a spooled source this old is not any live render's (origin_timeout)


@dataclass(frozen=True, slots=True)
class SourceStat:
    size: int           # -1 when the origin did not say
    version: str        # changes whenever the bytes do (ETag, Last-Modified, or size+mtime)
    local_path: str = ""
    etag: str = ""      # the origin's own ETag, as it sent it (for x-smh-etag); "" when it sent none


class Origin:
    """Where a library's originals live. ``rel`` is a checked '/'-joined relative path."""

    kind = ""  # the metrics' label for its fetch times

    async def stat(self, space: str, rel: str) -> SourceStat:
        raise NotImplementedError

    async def revalidate(self, space: str, rel: str, known: SourceStat) -> SourceStat:
        """The version again, once ``known`` is no longer trusted (origins that can: conditionally)."""
        return await self.stat(space, rel)

    async def list(self, space: str, limit: int) -> list[str] | None:
        """Previewable files of the space (``rel`` paths, sorted, at most ``limit``); None: an origin
        that cannot be listed."""
        return None

    async def fetch(self, space: str, rel: str, known: SourceStat) -> tuple[Source, SourceStat]:
        raise NotImplementedError

    def stream(self, space: str, rel: str, known: SourceStat) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class LocalOrigin(Origin):
    """A folder. Paths are resolved (symlinks included) and must stay inside the root."""

    kind = "local"

    def __init__(self, root: str, limits: LimitsConfig, io: Executor) -> None:
        self.root = os.path.realpath(root)
        self.limits = limits
        self.io = io

    def _stat_sync(self, space: str, rel: str) -> SourceStat:
        root = os.path.realpath(os.path.join(self.root, space)) if space else self.root
        real = os.path.realpath(os.path.join(root, *rel.split("/")))
        # a symlink (or anything) that resolves outside the root does not exist for the client
        if os.path.commonpath([root, real]) != root or real == root:
            raise FileNotFound()
        try:
            st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFound() from None
        except OSError as exc:  # permission denied, name too long, ...
            raise FileNotFound(f"the file cannot be read ({exc.strerror})") from None
        if not stat_mod.S_ISREG(st.st_mode):
            raise FileNotFound()
        # size and mtime, never the inode: hosts holding copies of one library agree (API.md section 4)
        return SourceStat(st.st_size, f"{st.st_size:x}.{st.st_mtime_ns:x}", real)

    async def stat(self, space: str, rel: str) -> SourceStat:
        return await asyncio.get_running_loop().run_in_executor(self.io, self._stat_sync, space, rel)

    async def list(self, space: str, limit: int) -> list[str] | None:
        folder = os.path.join(self.root, space)
        return await asyncio.get_running_loop().run_in_executor(self.io, list_previewable, folder, limit)

    async def fetch(self, space: str, rel: str, known: SourceStat) -> tuple[Source, SourceStat]:
        if known.size > self.limits.max_source_bytes:
            raise SourceTooLarge(f"the source is {known.size} bytes, over the limit of "
                                 f"{self.limits.max_source_bytes}")
        # libvips reads the file itself, only as far as it needs (shrink-on-load)
        return Source(path=known.local_path), known

    async def stream(self, space: str, rel: str, known: SourceStat) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        fh = await loop.run_in_executor(self.io, open, known.local_path, "rb")
        try:
            while chunk := await loop.run_in_executor(self.io, fh.read, CHUNK):
                yield chunk
        finally:
            await loop.run_in_executor(self.io, fh.close)


def redirect_target(url: str, location: str, host: str) -> str:
    """Where a redirect from ``url`` leads, when it may be followed: on the origin's own ``host``
    only, over http(s), and never from https down to http (the bytes would then travel in clear)."""
    target = urljoin(url, location)
    if urlsplit(target).netloc != host or urlsplit(target).scheme not in ("http", "https"):
        raise OriginError("the origin redirected to another host")
    if urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https":
        raise OriginError("the origin redirected from https to http")
    return target


class HttpOrigin(Origin):
    """An http(s):// base URL (an object-storage bucket, a web server). One ClientSession per origin."""

    kind = "http"

    def __init__(self, base: str, limits: LimitsConfig, io: Executor, spool: Path) -> None:
        self.io = io
        self.spool = spool  # sources are written here, not held in memory (see ``spool``)
        self.base = base if base.endswith("/") else base + "/"
        self.host = urlsplit(self.base).netloc
        self.limits = limits
        self.timeout = origin_timeout(limits.origin_timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it must belong to the running loop
            self._session = origin_session(self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def url(self, space: str, rel: str) -> str:
        return self.base + quote(f"{space}/{rel}" if space else rel, safe="/")

    async def _request(self, method: str, space: str, rel: str, headers: dict[str, str] | None = None
                       ) -> aiohttp.ClientResponse:
        """Send, following redirects only on the origin's own host; raise typed errors."""
        url = self.url(space, rel)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = await self.session.request(method, url, headers=headers, allow_redirects=False)
            except TimeoutError:
                raise OriginTimeout() from None
            except aiohttp.ClientResponseError:
                if method != "HEAD":
                    raise OriginError("the origin sent a malformed response") from None
                # some servers send the body after a HEAD answer (aiohttp: "Data after Connection:
                # close"): ask again with a GET whose body is never read
                return await self._head_by_get(space, rel, headers)
            except (aiohttp.ClientError, OSError) as exc:
                raise OriginError(f"the origin failed: {type(exc).__name__}") from None
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.headers.get("Location", "")
                resp.release()
                url = redirect_target(url, location, self.host)
                continue
            if resp.status in (404, 410):
                resp.release()
                raise FileNotFound()
            if resp.status == 304 or 200 <= resp.status < 300:
                return resp
            if method == "HEAD" and resp.status in (405, 501):
                resp.release()
                return await self._head_by_get(space, rel, headers)
            resp.release()
            raise OriginError(f"the origin answered {resp.status}")
        raise OriginError("the origin redirected too many times")

    async def _head_by_get(self, space: str, rel: str, headers: dict[str, str] | None
                           ) -> aiohttp.ClientResponse:
        """For origins that refuse HEAD: a GET whose body is never read (the connection is dropped)."""
        resp = await self._request("GET", space, rel, headers)
        resp.close()
        return resp

    @staticmethod
    def _stat_of(resp: aiohttp.ClientResponse) -> SourceStat:
        length = resp.content_length if resp.content_length is not None else -1
        etag = resp.headers.get("ETag", "")
        modified = resp.headers.get("Last-Modified", "")
        version = f"e{etag}" if etag else (f"m{modified}" if modified else f"l{length}")
        return SourceStat(length, version, etag=etag)

    async def stat(self, space: str, rel: str) -> SourceStat:
        resp = await self._request("HEAD", space, rel)
        resp.release()
        return self._stat_of(resp)

    async def revalidate(self, space: str, rel: str, known: SourceStat) -> SourceStat:
        """A conditional HEAD: 304 keeps what we know without the origin resending anything."""
        headers = {}
        if known.version.startswith("e"):
            headers["If-None-Match"] = known.version[1:]
        elif known.version.startswith("m"):
            headers["If-Modified-Since"] = known.version[1:]
        resp = await self._request("HEAD", space, rel, headers)
        resp.release()
        return known if resp.status == 304 else self._stat_of(resp)

    async def fetch(self, space: str, rel: str, known: SourceStat) -> tuple[Source, SourceStat]:
        cap = self.limits.max_source_bytes
        resp = await self._request("GET", space, rel)
        got = self._stat_of(resp)
        if got.size > cap:
            resp.release()
            raise SourceTooLarge(f"the origin says {got.size} bytes, over the limit of {cap}")
        async with aclosing(self._chunks(resp)) as chunks:
            source = await spool(chunks, cap, self.io, self.spool)
        if got.size >= 0 and source.size != got.size:
            discard(source)
            raise OriginError("the origin sent a body shorter than its Content-Length")
        return source, got

    async def stream(self, space: str, rel: str, known: SourceStat) -> AsyncIterator[bytes]:
        async with aclosing(self._chunks(await self._request("GET", space, rel))) as chunks:
            async for chunk in chunks:
                yield chunk

    @staticmethod
    async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        """The body, chunk by chunk, failures typed; the connection released however it ends."""
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                yield chunk
        except TimeoutError:
            raise OriginTimeout() from None
        except aiohttp.ClientError as exc:
            raise OriginError(f"the origin failed while sending: {type(exc).__name__}") from None
        finally:
            resp.release()


async def spool(chunks: AsyncIterator[bytes], cap: int, io: Executor, folder: Path) -> Source:
    """A fetched body written to a temporary file in ``folder`` as it arrives (libvips then reads it
    as far as it needs: memory does not grow with the source's size); over ``cap`` bytes: 413.
    ``discard`` removes it once the render is done."""
    loop = asyncio.get_running_loop()
    # the pid in the name: a crashed worker's files are known as soon as it is gone (spool_abandoned)
    mkstemp = partial(tempfile.mkstemp, prefix=f"{SPOOL_PREFIX}{os.getpid()}.", dir=folder)
    fd, path = await loop.run_in_executor(io, mkstemp)
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > cap:
                    raise SourceTooLarge(f"the source is over the limit of {cap} bytes")
                await loop.run_in_executor(io, fh.write, chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return Source(path=path, size=size, temporary=True)


def fresh_spool(cache_dir: Path) -> Path:
    """``cache_dir/.spool`` (on the cache's disk, not in memory), emptied of what a crash left there
    by a process that is gone. Blocking: call it in an executor."""
    folder = cache_dir / ".spool"
    folder.mkdir(parents=True, exist_ok=True)
    clear_spool(folder)
    return folder


def clear_spool(folder: Path) -> int:
    """Remove the spooled sources whose process is gone (or that are too old to be any live
    render's); how many. Blocking. At start and in the evictor's sweep: a worker killed mid-fetch
    (OOM on a big original) is restarted in a second, and its files must not wait for an hour."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            with contextlib.suppress(OSError):
                if spool_abandoned(entry.name, entry.stat().st_mtime):
                    entry.unlink()
                    removed += 1
    return removed


def spool_abandoned(name: str, mtime: float) -> bool:
    """``.src.<pid>.<rand>`` of a process that is gone, or any spooled file older than SPOOL_ABANDONED."""
    if time.time() - mtime > SPOOL_ABANDONED:
        return True
    try:
        os.kill(int(name.removeprefix(SPOOL_PREFIX).split(".")[0]), 0)
    except (ValueError, ProcessLookupError):
        return name.startswith(SPOOL_PREFIX)  # an older name without a pid waits out its hour
    except PermissionError:
        pass  # alive, another user's
    return False


def discard(source: Source) -> None:
    """Remove a spooled source (a no-op for an origin's own file)."""
    if source.temporary and source.path:
        with contextlib.suppress(OSError):
            os.unlink(source.path)


def make_origin(origin: str, limits: LimitsConfig, io: Executor, spool: Path, s3: S3Config | None = None
                ) -> Origin:
    """The origin for a library's ``origin``; fetched bodies are spooled to files under ``spool``."""
    if s3 is not None:
        from .s3origin import S3Origin  # it builds on this module

        return S3Origin(origin, s3, limits, io, spool)
    if origin.startswith(("http://", "https://")):
        return HttpOrigin(origin, limits, io, spool)
    return LocalOrigin(origin, limits, io)


async def check_origins(config: Config, prefix_known: frozenset[str] = frozenset()) -> list[str]:
    """Problems reaching each library's origin (a folder that cannot be read, a URL that fails, a base
    URL that is not there: a wrong prefix, unless the library is in ``prefix_known``)."""
    problems = []
    for lib in config.libraries:
        if lib.s3 is not None:
            problems += await _check_s3(lib, config.limits)
            continue
        if not lib.is_http:
            if not os.access(lib.origin, os.R_OK | os.X_OK):
                problems.append(f"library {lib.id!r}: folder {lib.origin!r} cannot be read")
            continue
        timeout = aiohttp.ClientTimeout(total=min(config.limits.origin_timeout, 10))
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.head(lib.origin, allow_redirects=False) as resp:
                if resp.status >= 500:
                    problems.append(f"library {lib.id!r}: origin {lib.origin} answered {resp.status}")
                elif resp.status in (404, 410) and lib.id not in prefix_known:
                    # a web server answers an existing folder 403 or 200, a missing one 404
                    problems.append(f"library {lib.id!r}: origin {lib.origin} answered {resp.status} at its "
                                    "base URL: its prefix looks wrong (every file would be FileNotFound); "
                                    f"for an origin that never answers a folder: check --probe {lib.id}:PATH")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            problems.append(f"library {lib.id!r}: origin {lib.origin} is unreachable ({type(exc).__name__})")
    return problems


async def _check_s3(lib: LibraryConfig, limits: LimitsConfig) -> list[str]:
    from .s3origin import check_s3

    problem = await check_s3(lib.origin, lib.s3 or S3Config(), limits.origin_timeout)
    return [f"library {lib.id!r}: {problem}"] if problem else []


def previewable_name(rel: str) -> bool:
    """A path the gallery and ``warm`` list: a previewable extension, nothing hidden on the way."""
    name = rel.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return not any(part.startswith(".") for part in rel.split("/")) and kind_of(ext) is not MediaKind.FILE


def list_previewable(folder: str, limit: int) -> list[str]:
    """Previewable files under a folder, '/'-joined relative paths, sorted, at most ``limit``
    (hidden files and folders skipped). Blocking: call it in an executor."""
    found: list[str] = []
    root = os.path.realpath(folder)
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if previewable_name(name):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
                if len(found) >= limit:
                    return found
    return found
