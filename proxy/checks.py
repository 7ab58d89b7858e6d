"""``preview-proxy check``'s origin checks: origins that cannot be reached, and an HTTP origin whose
prefix is wrong (its base URL is not there, or a named file is not found through it: every request
would be FileNotFound). The face model is loaded by ``check`` itself (``faces.load``)."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .config import Config
from .errors import ApiError, FileNotFound
from .origin import check_origins, make_origin


def parse_probe(text: str) -> tuple[str, str]:
    """``LIBRARY:PATH`` -> (library, path); ValueError when it is not that."""
    library, sep, path = text.partition(":")
    if not sep or not library or not path.strip("/"):
        raise ValueError(f"expected LIBRARY:PATH (a file that exists), got {text!r}")
    return library, path.strip("/")


async def probe_problems(config: Config, probes: list[tuple[str, str]]) -> list[str]:
    """Each ``(library, path)`` must be a file its origin serves (its prefix is then right)."""
    problems = []
    with ThreadPoolExecutor(1) as io, tempfile.TemporaryDirectory(prefix="preview-check-") as spool:
        for library, path in probes:
            lib = config.library(library)
            if lib is None:
                problems.append(f"--probe {library}:{path}: no library {library!r}")
                continue
            origin = make_origin(lib.origin, config.limits, io, Path(spool), lib.s3)
            try:
                await origin.stat("", path)
            except FileNotFound:
                problems.append(f"library {lib.id!r}: {path} is not found at {lib.origin}: the origin's "
                                "prefix (or the path) is wrong")
            except ApiError as exc:
                problems.append(f"library {lib.id!r}: {path}: {exc.code}: {exc.message}")
            finally:
                await origin.close()
    return problems


async def check(config: Config, probes: list[tuple[str, str]]) -> list[str]:
    """Every problem ``check`` reports, in one list."""
    probed = frozenset(library for library, _ in probes)
    problems = await check_origins(config, prefix_known=probed)
    return problems + await probe_problems(config, probes)
