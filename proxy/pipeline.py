"""One render, start to finish, on a render thread: which pipeline a source takes. Synchronous.

``render`` is the only entry point the edge calls (through ``RenderPool.run``): stills go through
``render.render_still``; animated images and video covers through their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .render import Rendered, Source, probe, render_still
from .request import PreviewOptions
from .types import MediaKind


@dataclass(frozen=True, slots=True)
class Job:
    source: Source
    kind: MediaKind
    extension: str
    options: PreviewOptions  # ``format`` already resolved to the output family


def render(job: Job, config: Config) -> Rendered:
    """Render ``job``; raises ApiError subclasses (413, 415) for sources it must refuse."""
    info = probe(job.source, config.limits)
    return render_still(job.source, info, job.options, config.output)
