"""``GET /``: a gallery of the public folder and S3 libraries (``server.gallery = true``; on in the demo).

A grid of ``<img src="...?preview&size=S">`` tags, as a page written for the hosted product would
have, with a size switch and, when ``faces.debug`` is on, a link to each photo's face debug view.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from aiohttp import web

from ..config import Config
from ..errors import NotFound
from ..keys import CONFIG, ORIGINS

MAX_FILES = 200
SIZES = (100, 200, 400)


def _page(config: Config, listing: dict[str, list[str]], size: int) -> str:
    switch = " ".join(f'<a href="/?size={s}"{" class=on" if s == size else ""}>{s}px</a>' for s in SIZES)
    sections = []
    for lib_id, files in listing.items():
        tiles = []
        for rel in files:
            url = f"/api/v1/file/{quote(lib_id)}/-/{quote(rel)}?preview&size={size}"
            link = (f"{url}&debug=faces" if config.faces.debug
                    else f"/api/v1/file/{quote(lib_id)}/-/{quote(rel)}?preview&width_size=1024")
            tiles.append(f'<figure><a href="{html.escape(link)}"><img src="{html.escape(url)}" '
                         f'loading="lazy" width="{size}" height="{size}" alt="{html.escape(rel)}"></a>'
                         f"<figcaption>{html.escape(rel)}</figcaption></figure>")
        grid = "".join(tiles) or "no files"
        sections.append(f"<h2>{html.escape(lib_id)}</h2>\n<div class=grid>{grid}</div>")
    hint = ("click a photo for its face debug view" if config.faces.debug
            else "click a photo for a larger preview")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>preview-proxy gallery</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px; background: #f4f4f4; color: #222; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; background: #fff; padding: 6px; box-shadow: 0 1px 3px #0002; }}
figure img {{ display: block; object-fit: contain; background: #ddd; }}
figcaption {{ font-size: 12px; max-width: {size}px; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; }}
a.on {{ font-weight: bold; }}
</style></head>
<body><h1>preview-proxy</h1>
<p>Every tile is <code>&lt;img src="/api/v1/file/{{library}}/-/{{path}}?preview&amp;size={size}"&gt;</code>:
a 302 to a render made once and cached. Size: {switch}. {hint}.</p>
{"".join(sections) or "<p>No public folder or S3 library is configured.</p>"}
</body></html>"""


async def gallery(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    if not config.server.gallery:
        raise NotFound(code="RouteNotFound")
    try:
        size = int(request.query.get("size", "200"))
    except ValueError:
        size = 200
    size = size if size in SIZES else 200
    libs = [lib for lib in config.libraries if lib.public_read and not lib.multi_tenant and not lib.is_http]
    listing = {lib.id: await request.app[ORIGINS][lib.id].list("", MAX_FILES) or [] for lib in libs}
    return web.Response(text=_page(config, listing, size), content_type="text/html",
                        headers={"Cache-Control": "no-store"})
