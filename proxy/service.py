"""The preview decision: source version -> cache key -> render once -> the asset's URL.

This is the edge between the async world (origins, cache I/O) and the synchronous core (render,
faces): the core runs only through ``RenderPool.run``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from urllib.parse import unquote

from .access import Grant, origin_space
from .cache import DiskCache, cache_key
from .config import Config, LibraryConfig
from .errors import FileNotFound, Forbidden
from .faces import Detection, detector_id, detector_name
from .links import (
    ORIGINALS,  # noqa: F401 - re-exported
    PRIVATE,
    AssetPath,
    Description,
    has_private,
    key_path,
    original_uri,
    render_uri,
    signed_query,
)
from .media import kind_of
from .metrics import Metrics
from .origin import Origin, SourceStat, discard
from .pipeline import Job, render
from .pool import RenderPool
from .renderstore import RenderStore
from .request import (
    ID_RE,
    FileRef,
    PreviewOptions,
    RenderRequest,
    accepted_format,
    check_file_path,
    parse_options,
    parse_query,
)
from .store import Store
from .types import Face, Fit, MediaKind

_FAMILY_BY_EXTENSION = {"png": "png", "gif": "gif", "webp": "webp", "avif": "avif"}
NEGOTIABLE = frozenset({"jpeg", "png"})  # output families that negotiation may replace; GIF stays
MAX_VERSIONS = 100_000
FACES_NS = "faces"
FACES_TTL = 30 * 86400  # keyed by the source version: a changed photo is a new key anyway
FAILED_NS = "faces-failed"
# After a detection fails on a source version, its centre-crop fallback is served for this long
# before the detector is tried on it again; doubled at each failure, up to the second figure.
BACKOFF = (60.0, 3600.0)
log = logging.getLogger("proxy.faces")


def centre_fallback(rel: str) -> str:
    """Where a render whose face detection failed goes: its own key, beside the real one."""
    folder, _, name = rel.rpartition("/")  # [p/]<library>/ab/cd, <key>.<ext>
    key, _, ext = name.partition(".")
    return f"{folder.rsplit('/', 2)[0]}/{key_path(cache_key(key, 'centre-fallback'), ext)}"


def output_family(ref: FileRef, options: PreviewOptions) -> str:
    """The output format, known from the name before any byte is read (so the key names the file)."""
    if options.debug:
        return "jpeg"
    if options.format:
        return options.format
    if kind_of(ref.extension) is MediaKind.VIDEO:
        return "jpeg"
    return _FAMILY_BY_EXTENSION.get(ref.extension, "jpeg")


def negotiate(ref: FileRef, options: PreviewOptions, accept: str, offer: tuple[str, ...]
              ) -> tuple[PreviewOptions, bool]:
    """Options with the format ``accept`` picks from ``offer`` (API section 9), and whether negotiation
    applied: then the 302 must say ``Vary: Accept``, its JPEG/PNG fallback included (a shared cache
    would otherwise hand that fallback to clients that asked for AVIF). The chosen format goes into
    ``options.format``, so it is in the canonical options (the cache key) like an explicit ``format=``."""
    if (not offer or options.format or options.debug or kind_of(ref.extension) is not MediaKind.IMAGE
            or output_family(ref, options) not in NEGOTIABLE):
        return options, False
    chosen = accepted_format(accept, offer)
    return (replace(options, format=chosen) if chosen else options), True


@dataclass(frozen=True, slots=True)
class Decision:
    location: str
    cache_hit: bool | None  # None: no render involved (download link)
    rel: str = ""           # the render's path in the disk cache


class Previews:
    def __init__(self, config: Config, origins: dict[str, Origin], cache: DiskCache, pool: RenderPool,
                 metrics: Metrics, store: Store, renders: RenderStore | None = None) -> None:
        self.config = config
        self.renders = renders  # the render store shared by the hosts, when configured
        self.origins = origins
        self.cache = cache
        self.pool = pool
        self.metrics = metrics
        self.store = store
        self._versions: OrderedDict[tuple[str, str, str], tuple[SourceStat, float]] = OrderedDict()
        self.detector = detector_name(config.faces)
        self.detector_id = detector_id(config.faces)
        metrics.detector.labels(self.detector).set(1)

    # ---- source versions -------------------------------------------------------------------------

    async def source_stat(self, lib: LibraryConfig, space: str, ref: FileRef, fresh: bool = False
                          ) -> SourceStat:
        """The source's version, trusted for ``cache.version_ttl`` seconds (unless ``fresh``), then
        checked again."""
        vkey = (lib.id, space, ref.path)
        now = time.monotonic()
        hit = self._versions.get(vkey)
        if hit is not None and hit[1] > now and not fresh:
            return hit[0]
        origin = self.origins[lib.id]
        if hit is not None:
            st = await origin.revalidate(space, ref.path, hit[0])
        else:
            st = await origin.stat(space, ref.path)
        self._remember(vkey, st)
        return st

    # ---- face boxes, per source version (every size of one photo detects once) ------------------

    def _faces_key(self, lib: LibraryConfig, space: str, ref: FileRef, version: str) -> str:
        return cache_key(self.detector_id, lib.id, space, ref.path, version)

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

    async def _backing_off(self, key: str) -> bool:
        """Did the detector fail on this source version recently (so its fallback is the answer)?"""
        try:
            failed = await self.store.get_json(FAILED_NS, key)
        except Exception:  # the store is down: try the detector again, as without a back-off
            return False
        until = failed.get("until") if isinstance(failed, dict) else None
        return isinstance(until, float) and until > time.time()

    async def _record_failure(self, key: str) -> None:
        """Back off from this source version: ``BACKOFF[0]`` seconds, doubled at each failure."""
        try:
            failed = await self.store.get_json(FAILED_NS, key)
            count = failed.get("count", 0) + 1 if isinstance(failed, dict) else 1
            wait = min(BACKOFF[0] * 2 ** (count - 1), BACKOFF[1])
            await self.store.set_json(FAILED_NS, key, {"count": count, "until": time.time() + wait},
                                      2 * BACKOFF[1])
        except Exception as exc:
            log.warning('{"event": "face_cache_unavailable", "error": "%s"}', type(exc).__name__)

    async def _record_detection(self, key: str, detection: Detection) -> None:
        self.metrics.detect_seconds.labels(detection.detector).observe(detection.seconds)
        if detection.failed:  # logged by faces.find_faces; the fallback is served while backing off
            self.metrics.detect_failures.inc()
            await self._record_failure(key)
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
        return original_uri(self.config.cache.asset_prefix, ref.library, ref.space, ref.path)

    # ---- the request model ---------------------------------------------------------------------------

    def model(self, ref: FileRef, version: str, options: PreviewOptions, kind: MediaKind) -> RenderRequest:
        """The frozen description of one render: its canonical form is the cache key's only input."""
        if options.debug and not self.config.faces.debug:
            options = replace(options, debug="")  # the debug view is off: an ordinary preview
        options = replace(options, format=output_family(ref, options))
        return RenderRequest(ref, version, options, kind, self._settings(kind, options))

    def _settings(self, kind: MediaKind, options: PreviewOptions) -> str:
        """The configured settings that reach these pixels (changing one must not serve old renders),
        and only those: a JPEG quality change leaves the PNG renders valid."""
        out = self.config.output
        quality = {"jpeg": f"q{out.jpeg_quality}", "webp": f"q{out.webp_quality}",
                   "avif": f"q{out.avif_quality}", "png": f"z{out.png_compression}"}
        parts = [quality.get(options.format, "")]
        if options.sizing.fit is Fit.SQUARE or options.debug:
            parts.append(self.detector_id)
        if kind is MediaKind.VIDEO and self.config.video.skip_black:
            parts.append("skipblack")  # another frame: another render
        return ",".join(part for part in parts if part)

    def _rel(self, model: RenderRequest, private: bool) -> str:
        rel = key_path(cache_key(model.canonical()), model.options.format, model.ref.library)
        return PRIVATE + rel if private else rel

    def _uri(self, rel: str, model: RenderRequest) -> str:
        described = Description(model.ref.space, model.ref.path, model.version, model.options.query())
        return render_uri(self.config.cache.asset_prefix, rel, described)

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
        st = await self.source_stat(lib, space, ref)
        model = self.model(ref, st.version, options, kind)
        hit, rel = await self.render(lib, space, model, st, self._rel(model, not grant.public))
        (self.metrics.cache_hits if hit else self.metrics.cache.labels("miss")).inc()
        return Decision(self._url(self._uri(rel, model), not grant.public), hit, rel)

    async def asset(self, lib: LibraryConfig, asset: AssetPath) -> tuple[str, bool]:
        """Make the render an asset URL describes, on a host that does not have it (API.md section 10).
        Answers the file to serve, and whether it is the URL's own render (immutable) or what the
        description means here and now (a changed source, other render settings, an edited link)."""
        described = asset.description
        if described is None:
            raise FileNotFound("no such asset (it may have been evicted: ask for the preview again)")
        if described.space != "-" and not ID_RE.match(described.space):
            raise FileNotFound("no such asset")
        if not asset.private and not lib.space_public(described.space):
            raise Forbidden("a private render's link must be signed", code="InvalidSignature")
        ref = FileRef(lib.id, described.space, check_file_path(described.path))
        kind = kind_of(ref.extension)
        if kind is MediaKind.FILE:
            raise FileNotFound("no such asset")
        space = origin_space(lib, ref.space)
        # asked of the origin, not trusted from memory: this is a render anyway, and its bytes must be
        # the described version's to be stored under this URL
        st = await self.source_stat(lib, space, ref, fresh=True)
        model = self.model(ref, st.version, parse_options(parse_query(described.options)), kind)
        rel = self._rel(model, asset.private)
        hit, written = await self.render(lib, space, model, st, rel)
        (self.metrics.cache_hits if hit else self.metrics.cache.labels("miss")).inc()
        return written, written == asset.rel

    async def render(self, lib: LibraryConfig, space: str, model: RenderRequest, st: SourceStat, rel: str
                     ) -> tuple[bool, str]:
        """``(hit, where the render is)``: made once (``DiskCache.ensure``) when it is not on disk;
        while the detector backs off from this source version, its centre-crop fallback."""
        # the extra look at the disk only where a detection can have failed: it may cost a stat
        if self._detects(model) and not await self.cache.has(rel) \
                and (fallback := await self._fallback(lib, space, model, st, rel)):
            return True, fallback  # no fetch, no render
        return await self.cache.ensure(rel, lambda: self._render(lib, space, model, st, rel))

    def _detects(self, model: RenderRequest) -> bool:
        """Does this render look for faces (a square, with a detector)?"""
        return model.options.sizing.fit is Fit.SQUARE and self.detector != "none"

    async def _fallback(self, lib: LibraryConfig, space: str, model: RenderRequest, st: SourceStat, rel: str
                        ) -> str | None:
        """The centre-crop fallback beside ``rel``, while the detector backs off from this source."""
        if not self._detects(model):
            return None
        fallback = centre_fallback(rel)
        key = self._faces_key(lib, space, model.ref, st.version)
        return fallback if await self._backing_off(key) and await self.cache.has(fallback) else None

    async def _render(self, lib: LibraryConfig, space: str, model: RenderRequest, st: SourceStat, rel: str
                      ) -> tuple[str, bytes | None]:
        """Fetch and render: ``(rel, bytes)``; when face detection failed, the centre crop made instead
        goes beside it (``centre_fallback``): ``rel`` stays free, so the next request tries the
        detector again instead of serving the fallback for a year. Under the render lock, a process
        that waited for another's failed detection takes its fallback: ``(fallback, None)``. With a
        shared render store, a render another host made is downloaded from it instead, and what is
        rendered here goes there."""
        if fallback := await self._fallback(lib, space, model, st, rel):
            return fallback, None
        if self.renders is not None and (stored := await self.renders.get(rel)) is not None:
            return rel, stored
        limit = self.config.limits.render_deadline
        # a ticket before any byte is fetched: concurrent downloads <= render slots + queue
        async with self.pool.admit(time.monotonic() + limit if limit else 0.0) as ticket:
            ref = model.ref
            origin = self.origins[lib.id]
            started = time.perf_counter()
            source, fetched = await origin.fetch(space, ref.path, st)
            try:
                self.metrics.origin_seconds.labels(origin.kind).observe(time.perf_counter() - started)
                if fetched.version != st.version:  # changed under us: the render is of what we fetched
                    self._remember((lib.id, space, ref.path), fetched)
                started = time.perf_counter()
                faces_key = self._faces_key(lib, space, ref, fetched.version)
                known = await self._known_faces(faces_key) if self._detects(model) else None
                job = Job(source, model.kind, ref.extension, model.options, known)
                outcome = await ticket.run(render, job, self.config)
            finally:
                await asyncio.get_running_loop().run_in_executor(self.cache.io, discard, source)
        self.metrics.render_seconds.labels(job.kind.value).observe(time.perf_counter() - started)
        if outcome.detection is not None:
            await self._record_detection(faces_key, outcome.detection)
            if outcome.detection.failed:
                return centre_fallback(rel), outcome.rendered.data  # not for the other hosts
        if self.renders is not None:
            await self.renders.put(rel, outcome.rendered.data)
        return rel, outcome.rendered.data
