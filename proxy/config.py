"""Configuration: TOML file + ``PREVIEW_PROXY_<SECTION>_<KEY>`` environment overrides -> frozen dataclasses.

Every problem in a config is collected and reported at once (``ConfigError``), naming the file and key,
so an operator fixes a bad config in one pass instead of one restart per typo.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .cpus import usable_cpus
from .s3config import (
    RENDER_STORE_ID,
    RenderStoreConfig,
    S3Config,
    parse_s3_origin,
    render_store_config,
    s3_config,
    unknown_s3_variables,
)
from .types import Secret

__all__ = ["S3Config"]  # re-exported: the S3 settings are a part of the config like the others

_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ORIGIN_SCHEMES = ("http", "https", "s3")  # besides local folders
ENV_PREFIX = "PREVIEW_PROXY_"
# variables of that prefix that are not "<SECTION>_<KEY>": the config file, library secrets, and the
# S3 credentials of a library (PREVIEW_PROXY_S3_<LIBRARY>_...)
_ENV_OTHERS = ("CONFIG", "LIBRARY_", "S3_")
RESERVED_IDS = frozenset({"o", "p"})  # {asset_prefix}o/ holds originals, {asset_prefix}p/ private renders


class ConfigError(Exception):
    """A config that cannot be served; ``problems`` lists every one found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid config {source}:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    redirect_max_age: int = 60
    gallery: bool = False
    workers: int = 1  # processes of `serve` (0: one per usable CPU); `serve --workers N` overrides it

    @property
    def processes(self) -> int:
        return self.workers or usable_cpus()


@dataclass(frozen=True, slots=True)
class CacheConfig:
    dir: Path = Path("var/cache")
    max_size: int = 2 * 1024**3
    asset_prefix: str = "/_assets/"
    sign_secret: Secret = field(default_factory=lambda: Secret(""))
    sign_ttl: int = 3600
    version_ttl: float = 5.0  # seconds a source's version (and a render's presence) is trusted unchecked
    evict_grace: float = 10.0  # seconds past 2 x version_ttl that a just-used render is never evicted


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "memory://"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_source_bytes: int = 100 * 1024**2
    max_source_pixels: int = 100_000_000
    max_frames: int = 300
    origin_timeout: float = 15.0
    render_concurrency: int = 0
    queue_limit: int = 256
    render_deadline: float = 60.0  # seconds from admission to a finished render; 0 = none

    @property
    def workers(self) -> int:
        return self.render_concurrency or usable_cpus()


@dataclass(frozen=True, slots=True)
class FacesConfig:
    detector: str = "auto"
    model: str = ""
    debug: bool = False
    # the short side (px) of the second view, looked at only when the first (320 px long side) keeps no
    # face; 0: no second look
    second_look: int = 240


@dataclass(frozen=True, slots=True)
class VideoConfig:
    skip_black: bool = False  # cover: the first frame that is not near-black within the first 2 s


@dataclass(frozen=True, slots=True)
class OutputConfig:
    jpeg_quality: int = 85
    # WebP and AVIF qualities: the same SSIM as JPEG Q85 at sizes 200 and 400 on the corpus photos
    # (bench/bench_formats.py, bench/RESULTS.md "formats"); AVIF 0.65x and WebP 0.72x its bytes
    webp_quality: int = 82
    avif_quality: int = 68
    png_compression: int = 6
    # formats offered to clients whose Accept names them, in this order (API section 9); () = off
    negotiate: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SpaceConfig:
    public_read: bool | None = None


@dataclass(frozen=True, slots=True)
class LibraryConfig:
    id: str
    origin: str
    secret: Secret
    mount: str = ""
    multi_tenant: bool = False
    public_read: bool = True
    spaces: dict[str, SpaceConfig] = field(default_factory=dict)
    s3: S3Config | None = None  # set for an s3:// origin

    @property
    def is_http(self) -> bool:
        return self.origin.startswith(("http://", "https://"))

    @property
    def is_s3(self) -> bool:
        return self.s3 is not None

    def space_public(self, space: str) -> bool:
        override = self.spaces.get(space)
        if override is not None and override.public_read is not None:
            return override.public_read
        return self.public_read


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    libraries: tuple[LibraryConfig, ...] = ()
    source: str = "<defaults>"
    render_store: RenderStoreConfig | None = None  # renders shared by every host (S3-compatible)

    def library(self, library_id: str) -> LibraryConfig | None:
        for lib in self.libraries:
            if lib.id == library_id:
                return lib
        return None


def parse_size(value: Any) -> int:
    """``"2GiB"`` / ``"100MiB"`` / ``1048576`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 100MiB")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"expected a size such as 100MiB, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


_SECTIONS: dict[str, type] = {
    "server": ServerConfig, "cache": CacheConfig, "store": StoreConfig,
    "limits": LimitsConfig, "faces": FacesConfig, "output": OutputConfig,
    "video": VideoConfig,
}
_SIZE_KEYS = {("cache", "max_size"), ("limits", "max_source_bytes")}


def _coerce(section: str, key: str, value: Any, default: Any) -> Any:
    """Turn a TOML (or environment string) value into the type of the field's default."""
    if (section, key) in _SIZE_KEYS:
        return parse_size(value)
    if isinstance(default, Secret):
        return Secret(str(value))
    if isinstance(default, Path):
        return Path(str(value))
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or not re.fullmatch(r"-?\d+", str(value).strip()):
            raise ValueError(f"expected a whole number, got {value!r}")
        return int(value)
    if isinstance(default, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
        if isinstance(value, bool) or not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {value!r}")
        return number
    if isinstance(default, tuple):  # a TOML list of strings, or "a,b" from the environment
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError(f"expected a list of strings, got {value!r}")
        return tuple(item.strip() for item in items if item.strip())
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _section(name: str, raw: dict[str, Any], env: dict[str, str], problems: list[str]) -> Any:
    cls = _SECTIONS[name]
    defaults = cls()
    values: dict[str, Any] = {}
    for key in raw:
        if key not in cls.__dataclass_fields__:
            problems.append(f"[{name}] {key}: unknown key")
    prefix = f"PREVIEW_PROXY_{name.upper()}_"
    for env_name in env:  # a typo in a variable's name must not be silently ignored either
        if env_name.startswith(prefix) and env_name[len(prefix):].lower() not in cls.__dataclass_fields__:
            problems.append(f"{env_name} (environment): unknown key {env_name[len(prefix):].lower()!r}")
    for key in cls.__dataclass_fields__:
        env_name = f"PREVIEW_PROXY_{name.upper()}_{key.upper()}"
        where = f"{env_name} (environment)" if env_name in env else f"[{name}] {key}"
        if env_name in env:
            value = env[env_name]
        elif key in raw:
            value = raw[key]
        else:
            continue
        try:
            values[key] = _coerce(name, key, value, getattr(defaults, key))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    return cls(**values)


def _check_ranges(cfg: dict[str, Any], problems: list[str]) -> None:
    server, cache, limits, faces = cfg["server"], cfg["cache"], cfg["limits"], cfg["faces"]
    if not 0 <= server.port <= 65535:
        problems.append("[server] port: must be 0..65535")
    if server.public_url and not re.match(r"^https?://[^/]+$", server.public_url.rstrip("/")):
        problems.append("[server] public_url: expected http(s)://host[:port] (no path), or empty")
    if server.redirect_max_age < 0:
        problems.append("[server] redirect_max_age: must not be negative")
    if not 0 <= server.workers <= 256:
        problems.append("[server] workers: 0 (one per usable CPU) to 256")
    if not (cache.asset_prefix.startswith("/") and cache.asset_prefix.endswith("/")):
        problems.append("[cache] asset_prefix: must start and end with '/'")
    if cache.max_size < 1024**2:
        problems.append("[cache] max_size: at least 1MiB")
    # a negative sign_ttl would make every private link expired at birth
    if not 1 <= cache.sign_ttl <= 366 * 86400:
        problems.append("[cache] sign_ttl: 1..31622400 seconds (a year at most)")
    if not 0 <= cache.version_ttl <= 86400:
        problems.append("[cache] version_ttl: 0..86400 seconds")
    for key in ("max_source_bytes", "max_source_pixels", "max_frames", "origin_timeout", "queue_limit"):
        if getattr(limits, key) <= 0:
            problems.append(f"[limits] {key}: must be positive")
    if cache.evict_grace < 0:
        problems.append("[cache] evict_grace: must be 0 or more seconds")
    if limits.render_deadline < 0:
        problems.append("[limits] render_deadline: must be 0 (none) or more seconds")
    if limits.render_concurrency < 0:
        problems.append("[limits] render_concurrency: must be 0 (one per core) or more")
    if faces.detector == "haar":
        problems.append('[faces] detector: "haar" is gone (the YuNet model that ships with the service finds '
                        'more faces at a tenth of the cost): "auto" or "none"')
    elif faces.detector not in ("auto", "yunet", "none"):
        problems.append('[faces] detector: one of "auto", "yunet", "none"')
    if faces.model and not Path(faces.model).is_file():
        problems.append(f"[faces] model: no such file {faces.model!r}")
    if faces.second_look and not 120 <= faces.second_look <= 720:
        problems.append("[faces] second_look: 0 (off) or 120..720 (the second view's short side)")
    out = cfg["output"]
    for key in ("jpeg_quality", "webp_quality", "avif_quality"):
        if not 1 <= getattr(out, key) <= 100:
            problems.append(f"[output] {key}: must be 1..100")
    if not set(out.negotiate) <= {"avif", "webp"} or len(set(out.negotiate)) != len(out.negotiate):
        problems.append('[output] negotiate: a list of distinct formats among "avif", "webp"')
    if not 0 <= out.png_compression <= 9:
        problems.append("[output] png_compression: must be 0..9 (zlib's levels)")


def _library(i: int, raw: Any, problems: list[str], env: dict[str, str], check_folders: bool = True
             ) -> LibraryConfig | None:
    where = f"[[libraries]] #{i + 1}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table")
        return None
    lib_id = raw.get("id")
    valid_id = isinstance(lib_id, str) and bool(_ID_RE.match(lib_id))
    if valid_id:
        where = f"[[libraries]] id={lib_id!r}"
    if lib_id in RESERVED_IDS:
        problems.append(f"{where} id: {lib_id!r} is reserved (asset URLs use it); choose another")
    known = set(LibraryConfig.__dataclass_fields__)
    for key in raw:
        if key not in known:
            problems.append(f"{where} {key}: unknown key")
    if not valid_id:
        problems.append(f"{where} id: required, [A-Za-z0-9_-]{{1,64}}" if lib_id in (None, "") else
                        f"{where} id: {lib_id!r} is not a library id: 1 to 64 of A-Z a-z 0-9 _ -")
        return None
    origin = raw.get("origin")
    if not isinstance(origin, str) or not origin:
        problems.append(f"{where} origin: required (a folder, an http(s):// base URL, or s3://bucket/prefix)")
        return None
    s3 = None
    scheme = origin.partition("://")[0].lower() if "://" in origin else ""
    if origin.startswith("s3://"):
        if parse_s3_origin(origin) is None:
            problems.append(f"{where} origin: expected s3://bucket or s3://bucket/prefix, got {origin!r}")
        s3 = s3_config(where, lib_id, raw.get("s3"), env, problems)
    elif "s3" in raw:
        problems.append(f"{where} s3: only for an s3:// origin")
    elif scheme and scheme not in ORIGIN_SCHEMES:
        problems.append(f"{where} origin: {scheme}:// origins are not supported "
                        f"(a folder, or {', '.join(s + '://' for s in ORIGIN_SCHEMES)})")
    elif not scheme and check_folders and not Path(origin).is_dir():
        problems.append(f"{where} origin: folder {origin!r} does not exist")
    mount = raw.get("mount", "")
    if mount and (not isinstance(mount, str) or not re.fullmatch(r"/(?:[A-Za-z0-9._~-]+/)+", mount)):
        problems.append(f"{where} mount: expected a path such as \"/media/\" (leading and trailing slash)")
    spaces: dict[str, SpaceConfig] = {}
    raw_spaces = raw.get("spaces") or {}
    if not isinstance(raw_spaces, dict):
        problems.append(f"{where} spaces: expected a table of spaces")
        raw_spaces = {}
    for sid, sraw in raw_spaces.items():
        if not _ID_RE.match(sid) or not isinstance(sraw, dict):
            problems.append(f"{where} spaces.{sid}: invalid space id or not a table")
            continue
        pr = sraw.get("public_read")
        if pr is not None and not isinstance(pr, bool):
            problems.append(f"{where} spaces.{sid}.public_read: expected true or false")
            pr = None
        spaces[sid] = SpaceConfig(public_read=pr)
    flags: dict[str, bool] = {}
    for key, default in (("multi_tenant", False), ("public_read", True)):
        value = raw.get(key, default)
        if not isinstance(value, bool):
            problems.append(f"{where} {key}: expected true or false")
            value = default
        flags[key] = value
    secret = raw.get("secret", "")
    if not isinstance(secret, str):
        problems.append(f"{where} secret: expected a string")
        secret = ""
    return LibraryConfig(id=lib_id, origin=origin, secret=Secret(secret), mount=mount or "",
                         spaces=spaces, s3=s3, **flags)


def _unknown_env_sections(env: dict[str, str], problems: list[str]) -> None:
    """``PREVIEW_PROXY_CACHEE_DIR`` is a typo, not a variable of someone else's to be ignored."""
    for name in sorted(env):
        rest = name[len(ENV_PREFIX):]
        if not name.startswith(ENV_PREFIX) or rest.startswith(_ENV_OTHERS):
            continue
        if not any(rest.startswith(section.upper() + "_") for section in _SECTIONS):
            problems.append(f"{name} (environment): no such config section (sections: "
                            f"{', '.join(_SECTIONS)}; a library's secret: {ENV_PREFIX}LIBRARY_<ID>_SECRET)")


def env_name_of(library_id: str) -> str:
    """A library id as it appears in environment variable names: upper case, ``-`` as ``_``."""
    return library_id.upper().replace("-", "_")


def _library_env(libraries: list[LibraryConfig], env: dict[str, str], problems: list[str]
                 ) -> list[LibraryConfig]:
    """``PREVIEW_PROXY_LIBRARY_<ID>_SECRET`` overrides that library's ``secret`` (kept out of the file)."""
    by_name = {env_name_of(lib.id): lib for lib in libraries}
    secrets: dict[str, str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX + "LIBRARY_"):
            continue
        rest = name[len(ENV_PREFIX + "LIBRARY_"):]
        match = [k for k in by_name if rest == f"{k}_SECRET"]
        if not match:
            problems.append(f"{name} (environment): expected {ENV_PREFIX}LIBRARY_<ID>_SECRET for one of the "
                            f"libraries ({', '.join(sorted(by_name)) or 'none'})")
            continue
        secrets[by_name[match[0]].id] = env[name]
    return [replace(lib, secret=Secret(secrets[lib.id])) if lib.id in secrets else lib for lib in libraries]


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None,
                check_folders: bool = True) -> Config:
    """Read the TOML config at ``path`` (or ``$PREVIEW_PROXY_CONFIG``), apply environment overrides.

    Relative paths in it (cache dir, folder origins, model) are taken from the working directory.
    Raises ``ConfigError`` listing every problem (``check_folders=False``: all but missing origin
    folders, so that the demo's folder is made only for an otherwise valid config).
    """
    env = dict(os.environ if env is None else env)
    path = path or env.get("PREVIEW_PROXY_CONFIG")
    raw: dict[str, Any] = {}
    source = str(path) if path else "<defaults>"
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, ["file not found"]) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    return build_config(raw, env, source, check_folders)


def build_config(raw: dict[str, Any], env: dict[str, str] | None = None, source: str = "<dict>",
                 check_folders: bool = True) -> Config:
    """Validate an already-parsed config mapping (the tests build configs this way)."""
    env = {} if env is None else env
    problems: list[str] = []
    for key in raw:
        if key not in _SECTIONS and key not in ("libraries", "render_store"):
            problems.append(f"[{key}]: unknown section")
    _unknown_env_sections(env, problems)
    sections = {}
    for name in _SECTIONS:
        section_raw = raw.get(name, {})
        if not isinstance(section_raw, dict):
            problems.append(f"[{name}]: expected a table")
            section_raw = {}
        sections[name] = _section(name, section_raw, env, problems)
    _check_ranges(sections, problems)
    libraries = []
    raw_libraries = raw.get("libraries", [])
    if not isinstance(raw_libraries, list):
        problems.append("[[libraries]]: expected an array of tables ([[libraries]], not [libraries])")
        raw_libraries = []
    for i, lib_raw in enumerate(raw_libraries):
        lib = _library(i, lib_raw, problems, env, check_folders)
        if lib is not None:
            libraries.append(lib)
    render_store = render_store_config(raw.get("render_store"), env, problems)
    problems += unknown_s3_variables([lib.id for lib in libraries if lib.is_s3]
                                     + [RENDER_STORE_ID] * bool(render_store), env)
    libraries = _library_env(libraries, env, problems)
    ids = [lib.id for lib in libraries]
    for dup in sorted({x for x in ids if ids.count(x) > 1}):
        problems.append(f"[[libraries]] id={dup!r}: defined twice")
    mounts = [lib.mount for lib in libraries if lib.mount]
    for dup in sorted({m for m in mounts if mounts.count(m) > 1}):
        problems.append(f"[[libraries]] mount={dup!r}: used by two libraries")
    for m in mounts:
        if m.startswith(("/api/", sections["cache"].asset_prefix)) or m in ("/healthz/", "/metrics/"):
            problems.append(f"[[libraries]] mount={m!r}: clashes with a route of the service")
    if not libraries and not problems:
        problems.append("[[libraries]]: at least one library is needed")
    private = [lib.id for lib in libraries
               if not lib.public_read or any(s.public_read is False for s in lib.spaces.values())]
    if private and not sections["cache"].sign_secret:
        # private renders are only served on a signed link; a per-process random secret would break
        # links between nodes and nginx, so the operator chooses one (the same everywhere)
        problems.append(f"[cache] sign_secret: required, since library {private[0]!r} is private "
                        "(it signs private asset links; a long random string, the same on every node)")
    store_scheme = sections["store"].url.partition("://")[0]
    if store_scheme not in ("memory", "redis", "rediss"):
        problems.append('[store] url: expected "memory://" or "redis://host:port/db"')
    processes = sections["server"].processes
    if private and processes > 1 and store_scheme == "memory":
        problems.append(f"[server] workers: {processes} processes with private library {private[0]!r} "
                        "need a shared token store: set [store] url to redis://... (each process would "
                        "otherwise know only its own tokens)")
    if problems:
        raise ConfigError(source, problems)
    return Config(libraries=tuple(libraries), source=source, render_store=render_store, **sections)
