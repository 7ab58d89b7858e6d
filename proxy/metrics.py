"""Prometheus metrics, one registry per app (tests build many apps in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_RENDER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("preview_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.render_seconds = Histogram("preview_render_seconds", "Time to render one preview",
                                        ["kind"], buckets=_RENDER_BUCKETS, registry=r)
        self.cache = Counter("preview_cache", "Render cache lookups", ["result"], registry=r)
        self.cache_hits = self.cache.labels("hit")  # resolved once: the hot path counts it
        self.cache_bytes = Gauge("preview_cache_bytes", "Bytes of renders on disk", registry=r)
        self.cache_files = Gauge("preview_cache_files", "Renders on disk", registry=r)
        self.origin_seconds = Histogram("preview_origin_fetch_seconds", "Time to fetch an original",
                                        ["origin"], buckets=_RENDER_BUCKETS, registry=r)
        self.faces = Histogram("preview_faces_found", "Faces found per detection",
                               buckets=(0, 1, 2, 3, 5, 10, 20), registry=r)
        self.detect_seconds = Histogram("preview_face_detect_seconds", "Face detector time",
                                        ["detector"], buckets=_RENDER_BUCKETS, registry=r)
        self.detect_failures = Counter("preview_face_detect_failures",
                                       "Detections that failed (the crop fell back to the centre)",
                                       registry=r)
        self.detector = Gauge("preview_face_detector_info", "Face detector in use", ["detector"],
                              registry=r)
        self.queue_depth = Gauge("preview_queue_depth", "Renders waiting for a worker", registry=r)
        self.renders_running = Gauge("preview_renders_running", "Renders in progress", registry=r)
        self.rejected = Counter("preview_rejected", "Renders refused with 429 (queue full)", registry=r)
