"""Prometheus metrics, one registry per app (tests build many apps in one process).

Under ``serve --workers N`` the supervisor gives every worker one ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode: each process writes its values to files there), and any
worker's ``/metrics`` adds up all of them: the scrape describes the whole service, not whichever
worker answered it.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

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
        # the folder's, the same for every worker: the value a live worker set last is the current
        # one (the largest would keep a purged or evicted size until that worker answered a scrape)
        self.cache_bytes = Gauge("preview_cache_bytes", "Bytes of renders on disk", registry=r,
                                 multiprocess_mode="livemostrecent")
        self.cache_files = Gauge("preview_cache_files", "Renders on disk", registry=r,
                                 multiprocess_mode="livemostrecent")
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
                              registry=r, multiprocess_mode="livemax")
        self.queue_depth = Gauge("preview_queue_depth", "Renders waiting for a worker", registry=r,
                                 multiprocess_mode="livesum")
        self.renders_running = Gauge("preview_renders_running", "Renders in progress", registry=r,
                                     multiprocess_mode="livesum")
        self.render_store = Counter("preview_render_store", "Shared render store: hit, miss, error",
                                    ["result"], registry=r)
        self.rejected = Counter("preview_rejected", "Renders refused with 429 (queue full)", registry=r)


def exposition(metrics: Metrics) -> bytes:
    """The Prometheus text of the whole service: every worker's values when several share a
    ``PROMETHEUS_MULTIPROC_DIR``, else this process's registry."""
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(metrics.registry)
