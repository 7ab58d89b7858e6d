"""The preview decision: source version -> cache key -> render once -> the asset's URL.

This is the edge between the async world (origins, cache I/O) and the synchronous core (render,
faces): the core runs only through ``RenderPool.run``.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote

from .access import Grant, signed_query
from .cache import DiskCache, FileLock, cache_key, key_path
from .config import Config, LibraryConfig
from .errors import RateLimitExceeded
from .faces import Detection, detector_name
from .media import kind_of
from .metrics import Metrics
from .origin import HttpOrigin, Origin, SourceStat
from .pipeline import Job, render
from .pool import RenderPool
from .request import FileRef, PreviewOptions
from .store import Store
from .types import Face, Fit, MediaKind

ORIGINALS = "o/"  # asset_prefix + "o/{library}/{space}/{path}": originals, for download links
PRIVATE = "p/"    # asset_prefix + "p/...": renders of private content, served only with a signature
_FAMILY_BY_EXTENSION = {"png": "png", "gif": "gif", "webp": "webp", "avif": "avif"}
MAX_VERSIONS = 100_000
FACES_NS = "faces"
FACES_TTL = 30 * 86400  # keyed by the source version: a changed photo is a new key anyway
log = logging.getLogger("proxy.faces")


def centre_fallback(rel: str) -> str:
    """Where a render whose face detection failed goes: its own key, beside the real one."""
    folder, _, name = rel.rpartition("/")  # [p/]<library>/ab/cd, <key>.<ext>
    key, _, ext = name.partition(".")
    return f"{folder.rsplit('/', 2)[0]}/{key_path(cache_key(key, 'centre-fallback'), ext)}"


def has_private(lib: LibraryConfig) -> bool:
    """Is any of the library private (itself, or one of its spaces)?"""
    return not lib.public_read or any(space.public_read is False for space in lib.spaces.values())


def output_family(ref: FileRef, options: PreviewOptions) -> str:
    """The output format, known from the name before any byte is read (so the key names the file)."""
    if options.debug:
        return "jpeg"
    if options.format:
        return options.format
    if kind_of(ref.extension) is MediaKind.VIDEO:
        return "jpeg"
    return _FAMILY_BY_EXTENSION.get(ref.extension, "jpeg")


@dataclass(frozen=True, slots=True)
class Decision:
    location: str
    cache_hit: bool | None  # None: no render involved (download link)
    rel: str = ""           # the render's path in the disk cache


class Previews:
    def __init__(self, config: Config, origins: dict[str, Origin], cache: DiskCache, pool: RenderPool,
                 metrics: Metrics, store: Store) -> None:
        self.config = config
        self.origins = origins
        self.cache = cache
        self.pool = pool
        self.metrics = metrics
        self.store = store
        self._versions: OrderedDict[tuple[str, str, str], tuple[SourceStat, float]] = OrderedDict()
        self.detector = detector_name(config.faces)
        out = config.output
        # settings that change a render's pixels: changing one must not serve the old renders
        self.settings = (f"{self.detector}:{config.faces.second_look}:{out.jpeg_quality}:{out.webp_quality}:"
                         f"{out.avif_quality}:{out.png_compression}")
        metrics.detector.labels(self.detector).set(1)

    # ---- source versions -------------------------------------------------------------------------

    async def source_stat(self, lib: LibraryConfig, space: str, ref: FileRef) -> SourceStat:
        """The source's version, trusted for ``cache.version_ttl`` seconds, then checked again."""
        vkey = (lib.id, space, ref.path)
        now = time.monotonic()
        hit = self._versions.get(vkey)
        if hit is not None and hit[1] > now:
            return hit[0]
        origin = self.origins[lib.id]
        if hit is not None and isinstance(origin, HttpOrigin):
            st = await origin.revalidate(space, ref.path, hit[0])
        else:
            st = await origin.stat(space, ref.path)
        self._remember(vkey, st)
        return st

    # ---- face boxes, per source version (every size of one photo detects once) ------------------

    def _faces_key(self, lib: LibraryConfig, space: str, ref: FileRef, version: str) -> str:
        return cache_key(self.detector, lib.id, space, ref.path, version)

    async def _known_faces(self, key: str) -> tuple[Face, ...] | None:
        """Faces found before in this source version; None when unknown (or the store is down)."""
        try:
            raw = await self.store.get_json(FACES_NS, key)
        except Exception as exc:  # the store is an optimisation here: detect again, never fail
            log.warning('{"event": "face_cache_unavailable", "error": "%s"}', type(exc).__name__)
            return None
        try:
            return None if raw is None else tuple(Face(*map(float, row)) for row in raw)
        except (TypeError, ValueError):
            return None

    async def _record_detection(self, key: str, detection: Detection) -> None:
        self.metrics.detect_seconds.labels(detection.detector).observe(detection.seconds)
        if detection.failed:  # logged by faces.detect; not kept: the next render tries again
            self.metrics.detect_failures.inc()
            return
        self.metrics.faces.observe(len(detection.faces))
        rows = [[round(f.x, 1), round(f.y, 1), round(f.w, 1), round(f.h, 1), round(f.score, 3)]
                for f in detection.faces]
        try:
            await self.store.set_json(FACES_NS, key, rows, FACES_TTL)
        except Exception as exc:
            log.warning('{"event": "face_cache_unavailable", "error": "%s"}', type(exc).__name__)

    def _remember(self, vkey: tuple[str, str, str], st: SourceStat) -> None:
        self._versions[vkey] = (st, time.monotonic() + self.config.cache.version_ttl)
        self._versions.move_to_end(vkey)
        while len(self._versions) > MAX_VERSIONS:
            self._versions.popitem(last=False)

    # ---- URLs ----------------------------------------------------------------------------------------

    def _url(self, uri: str, sign: bool) -> str:
        if sign and self.config.cache.sign_secret:
            c = self.config.cache
            # signed over the decoded path: nginx's secure_link checks $uri, which is decoded
            uri = f"{uri}?{signed_query(unquote(uri), c.sign_secret.reveal(), c.sign_ttl)}"
        return self.config.server.public_url.rstrip("/") + uri

    def original_uri(self, ref: FileRef) -> str:
        return f"{self.config.cache.asset_prefix}{ORIGINALS}{ref.library}/{ref.space}/{quote(ref.path)}"

    # ---- decisions -----------------------------------------------------------------------------------

    async def download(self, lib: LibraryConfig, space: str, ref: FileRef, grant: Grant) -> Decision:
        await self.source_stat(lib, space, ref)  # 404 now rather than at the asset
        # a library with any private space has all its originals behind a signature in nginx
        return Decision(self._url(self.original_uri(ref), not grant.public or has_private(lib)), None)

    async def preview(self, lib: LibraryConfig, space: str, ref: FileRef, options: PreviewOptions,
                      grant: Grant) -> Decision:
        kind = kind_of(ref.extension)
        if kind is MediaKind.FILE:
            return await self.download(lib, space, ref, grant)
        if options.debug and not self.config.faces.debug:
            options = replace(options, debug="")  # the debug view is off: an ordinary preview
        st = await self.source_stat(lib, space, ref)
        family = output_family(ref, options)
        # frame_number counts for any name: a GIF may hide behind another extension (format=gif)
        canonical = options.canonical(animated=True)
        if kind is MediaKind.VIDEO and self.config.video.skip_black:
            canonical += ",skipblack"  # another frame: another render
        key = cache_key(lib.id, space, ref.path, st.version, canonical, family, self.settings)
        rel = key_path(key, family, lib.id)
        rel = rel if grant.public else PRIVATE + rel
        hit = await self.cache.has(rel)
        if not hit:
            written = await self.cache.once(key, lambda: self._render_once(key, lib, space, ref, st, options,
                                                                           family, rel))
            rel = written or rel
        (self.metrics.cache_hits if hit else self.metrics.cache.labels("miss")).inc()
        return Decision(self._url(self.config.cache.asset_prefix + rel, not grant.public), hit, rel)

    async def _render_once(self, key: str, lib: LibraryConfig, space: str, ref: FileRef, st: SourceStat,
                           options: PreviewOptions, family: str, rel: str) -> str | None:
        """Render unless another worker on this cache folder does (or did) it: a lock per key.
        Returns where the render was written when that is not ``rel`` (see ``_render``)."""
        lock = FileLock(self.cache.root, key)
        if not await lock.acquire(self.cache.io, lambda: self.cache.has(rel)):
            if await self.cache.has(rel):
                return None
            # another worker has held this render for too long: no 302 to a file that is not there
            raise RateLimitExceeded("this preview is being rendered elsewhere; retry",
                                    headers={"Retry-After": "2"})
        try:
            if not await self.cache.has(rel):  # another worker finished it while we waited
                return await self._render(lib, space, ref, st, options, family, rel)
            return None
        finally:
            await lock.release(self.cache.io)

    async def _render(self, lib: LibraryConfig, space: str, ref: FileRef, st: SourceStat,
                      options: PreviewOptions, family: str, rel: str) -> str | None:
        """Fetch, render, write to ``rel``; when face detection failed, the centre crop made instead
        is written beside it (``centre_fallback``) and that path is returned: ``rel`` stays free, so
        the next request tries the detector again instead of serving the fallback for a year."""
        self.pool.check()  # a full queue refuses before the source is fetched into memory
        origin = self.origins[lib.id]
        started = time.perf_counter()
        source, fetched = await origin.fetch(space, ref.path, st)
        self.metrics.origin_seconds.labels("http" if isinstance(origin, HttpOrigin) else "local").observe(
            time.perf_counter() - started)
        if fetched.version != st.version:  # changed under us: the render is of what we fetched
            self._remember((lib.id, space, ref.path), fetched)
        started = time.perf_counter()
        faces_key = self._faces_key(lib, space, ref, fetched.version)
        square = options.sizing.fit is Fit.SQUARE and self.detector != "none"
        known = await self._known_faces(faces_key) if square else None
        job = Job(source, kind_of(ref.extension), ref.extension, replace(options, format=family), known)
        outcome = await self.pool.run(render, job, self.config)
        self.metrics.render_seconds.labels(job.kind.value).observe(time.perf_counter() - started)
        written = None
        if outcome.detection is not None:
            await self._record_detection(faces_key, outcome.detection)
            if outcome.detection.failed:
                rel = written = centre_fallback(rel)
        await self.cache.put(rel, outcome.rendered.data)
        self.metrics.cache_bytes.set(self.cache.bytes)
        self.metrics.cache_files.set(self.cache.files)
        return written
