"""Soak load for preview-proxy: a realistic mix of cached previews, new sizes and new photos.

Run through ``bench/soak.py`` (which starts the service, the photos and the RSS sampling), or by hand:
``locust -f locustfile.py --headless --host http://127.0.0.1:8080 -u 20 -r 5 --run-time 2m``.

Environment:
  SOAK_LIBRARY      library id (default ``soak``)
  SOAK_PHOTOS       number of photos ``p0000.jpg``.. in it (default 40)
  SOAK_TOKEN        an access token to send (private libraries); unset: none
  SOAK_THROUGHPUT   requests per second per user (0: as fast as possible, for measuring capacity)
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, constant, constant_throughput, task

LIBRARY = os.environ.get("SOAK_LIBRARY", "soak")
PHOTOS = int(os.environ.get("SOAK_PHOTOS", "40"))
TOKEN = os.environ.get("SOAK_TOKEN", "")
THROUGHPUT = float(os.environ.get("SOAK_THROUGHPUT", "0"))
CACHED_SIZES = (64, 128, 200)      # what a gallery page asks again and again
HOT_PHOTOS = 8                     # the photos everyone looks at


class Viewer(HttpUser):
    wait_time = constant_throughput(THROUGHPUT) if THROUGHPUT > 0 else constant(0)

    def _preview(self, photo: int, query: str, name: str) -> None:
        url = f"/api/v1/file/{LIBRARY}/-/p{photo:04d}.jpg?preview&{query}"
        if TOKEN:
            url += f"&access_token={TOKEN}"
        with self.client.get(url, allow_redirects=False, name=name, catch_response=True) as resp:
            if resp.status_code == 302:
                resp.success()
            elif resp.status_code == 429:  # the queue is full: by design, counted apart from errors
                resp.success()
                self.environment.events.request.fire(
                    request_type="GET", name="429", response_time=resp.elapsed.total_seconds() * 1000,
                    response_length=0, exception=None, context={})
            else:
                resp.failure(f"{resp.status_code}")

    @task(6)
    def cached(self) -> None:
        self._preview(random.randrange(HOT_PHOTOS), f"size={random.choice(CACHED_SIZES)}", "cached")

    @task(3)
    def new_size(self) -> None:
        self._preview(random.randrange(HOT_PHOTOS), f"width_size={random.randint(40, 900)}", "new size")

    @task(1)
    def new_photo(self) -> None:
        self._preview(random.randrange(PHOTOS), f"size={random.randint(32, 600)}", "new photo")
