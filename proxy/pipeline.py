"""One render, start to finish, on a render thread: which pipeline a source takes. Synchronous.

``render`` is the only entry point the edge calls (through ``RenderPool.run``): stills go through
``render.render_still_faces``; animated images and video covers through their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyvips

from .animated import is_animated, render_animated
from .config import Config
from .debug import render_debug
from .errors import UnsupportedMedia
from .faces import Detection, find_faces
from .render import Rendered, Source, probe, render_still_faces
from .request import PreviewOptions
from .types import Face, MediaKind
from .video import render_cover


@dataclass(frozen=True, slots=True)
class Job:
    source: Source
    kind: MediaKind
    extension: str
    options: PreviewOptions  # ``format`` already resolved to the output family
    faces: tuple[Face, ...] | None = None  # known from the detection cache; None: detect if needed


@dataclass(frozen=True, slots=True)
class Outcome:
    rendered: Rendered
    detection: Detection | None = None  # set when faces were looked for in this render


def render(job: Job, config: Config) -> Outcome:
    """Render ``job``; raises ApiError subclasses (413, 415) for sources it must refuse.

    The module boundary for libvips: an error no pipeline typed itself (a video frame, the face debug
    view) is still a 415 for the source, never a 500 with a traceback in the log."""
    try:
        return _render(job, config)
    except pyvips.Error:
        raise UnsupportedMedia() from None


def _render(job: Job, config: Config) -> Outcome:
    faces = job.faces or ()
    detections: list[Detection] = []

    def detect(image: pyvips.Image, source: tuple[int, int]) -> tuple[Face, ...]:
        # in the source's coordinates: the renderer's, and the face store's for every later size
        detections.append(find_faces(image, source, config.faces))
        return detections[-1].faces

    finder = detect if job.faces is None and config.faces.detector != "none" else None
    if job.kind is MediaKind.VIDEO:
        rendered = render_cover(job.source, job.options, config.limits, config.output, config.video, faces,
                                job.extension, finder)
        return Outcome(rendered, detections[0] if detections else None)
    info = probe(job.source, config.limits)
    if job.options.debug:
        return Outcome(render_debug(job.source, info, job.options, config.output, config.faces))
    if is_animated(info, job.options.format or info.family):
        rendered = render_animated(job.source, info, job.options, config.limits, config.output, faces, finder)
        return Outcome(rendered, detections[0] if detections else None)
    rendered, detection = render_still_faces(job.source, info, job.options, config.output, config.faces,
                                             job.faces)
    return Outcome(rendered, detection)
