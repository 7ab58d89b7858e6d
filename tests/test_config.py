"""``proxy.config``: TOML + environment overrides, sizes, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ConfigError, build_config, load_config, parse_size

ROOT = Path(__file__).resolve().parent.parent


def lib(folder: Path, **extra: object) -> dict[str, object]:
    return {"id": "lib", "origin": str(folder), "secret": "s3cret", **extra}


def problems_of(raw: dict, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        build_config(raw, env)
    return err.value.problems


def has(problems: list[str], *words: str) -> bool:
    return any(all(w in p for w in words) for p in problems)


# ---- sizes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("2GiB", 2 * 1024**3), ("100MiB", 100 * 1024**2), ("1KiB", 1024), ("1TiB", 1024**4),
    ("10KB", 10_000), ("3MB", 3_000_000), ("1GB", 10**9), ("1.5GiB", 3 * 1024**3 // 2),
    ("2gib", 2 * 1024**3), (" 5 MiB ", 5 * 1024**2), ("123", 123), ("123B", 123), (1048576, 1048576),
    (0, 0),
])
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["", "MiB", "2 GiBs", "-1MiB", "1e3", "ten", True, -1, "1,5GiB"])
def test_parse_size_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


# ---- TOML and environment ---------------------------------------------------------------------------


def test_defaults_and_a_minimal_library(tmp_path: Path) -> None:
    cfg = build_config({"libraries": [lib(tmp_path)]})
    assert cfg.server.port == 8080 and cfg.server.redirect_max_age == 60
    assert cfg.cache.max_size == 2 * 1024**3 and cfg.cache.asset_prefix == "/_assets/"
    assert cfg.limits.max_source_bytes == 100 * 1024**2 and cfg.limits.workers >= 1
    (only,) = cfg.libraries
    assert (only.id, only.multi_tenant, only.public_read, only.mount) == ("lib", False, True, "")
    assert cfg.library("lib") is only and cfg.library("nope") is None
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(only.secret)
    assert only.secret.reveal() == "s3cret"


def test_load_toml_file_with_environment_overrides(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    path = tmp_path / "p.toml"
    path.write_text(f"""
[server]
port = 9000
public_url = "https://img.example.com"
[cache]
dir = "{tmp_path / 'cache'}"
max_size = "512MiB"
sign_secret = "sign-me"
[limits]
max_source_bytes = "20MiB"
origin_timeout = 2.5
[[libraries]]
id = "photos"
origin = "{media}"
mount = "/media/"
multi_tenant = true
public_read = false
[libraries.spaces.alice]
public_read = true
""", encoding="utf-8")
    env = {"PREVIEW_PROXY_SERVER_PORT": "9100", "PREVIEW_PROXY_CACHE_MAX_SIZE": "1GiB",
           "PREVIEW_PROXY_LIMITS_RENDER_CONCURRENCY": "3", "PREVIEW_PROXY_FACES_DETECTOR": "none",
           "PREVIEW_PROXY_OUTPUT_JPEG_QUALITY": "70", "PREVIEW_PROXY_SERVER_GALLERY": "true",
           "PREVIEW_PROXY_CACHE_VERSION_TTL": "0.5", "UNRELATED": "x"}
    cfg = load_config(path, env)
    assert cfg.source == str(path)
    assert cfg.server.port == 9100                                   # env beats the file
    assert cfg.server.public_url == "https://img.example.com"        # the file beats the default
    assert cfg.cache.max_size == 1024**3
    assert cfg.cache.dir == tmp_path / "cache"
    assert cfg.cache.sign_secret.reveal() == "sign-me" and "sign-me" not in repr(cfg.cache)
    assert cfg.cache.version_ttl == 0.5
    assert cfg.limits.max_source_bytes == 20 * 1024**2 and cfg.limits.origin_timeout == 2.5
    assert cfg.limits.render_concurrency == 3 and cfg.limits.workers == 3
    assert cfg.faces.detector == "none" and cfg.output.jpeg_quality == 70 and cfg.server.gallery is True
    (photos,) = cfg.libraries
    assert photos.mount == "/media/" and photos.multi_tenant and not photos.public_read
    assert photos.space_public("alice") and not photos.space_public("bob")


def test_config_file_named_by_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(f'[[libraries]]\nid = "a"\norigin = "{tmp_path}"\n', encoding="utf-8")
    cfg = load_config(None, {"PREVIEW_PROXY_CONFIG": str(path)})
    assert [lib.id for lib in cfg.libraries] == ["a"]


def test_shipped_config_is_valid(tmp_path: Path) -> None:
    text = (ROOT / "config" / "preview-proxy.toml").read_text(encoding="utf-8")
    (tmp_path / "var" / "demo-media").mkdir(parents=True)  # seeded on first start
    shipped = tmp_path / "preview-proxy.toml"
    shipped.write_text(text.replace('"var/', f'"{tmp_path}/var/'), encoding="utf-8")
    cfg = load_config(shipped, {})
    assert cfg.library("demo") is not None and cfg.cache.max_size == 2 * 1024**3


@pytest.mark.parametrize(("name", "value", "attr", "expected"), [
    ("PREVIEW_PROXY_SERVER_REDIRECT_MAX_AGE", "0", ("server", "redirect_max_age"), 0),
    ("PREVIEW_PROXY_LIMITS_MAX_SOURCE_BYTES", "1MiB", ("limits", "max_source_bytes"), 1024**2),
    ("PREVIEW_PROXY_LIMITS_MAX_SOURCE_BYTES", "4096", ("limits", "max_source_bytes"), 4096),
    ("PREVIEW_PROXY_SERVER_GALLERY", "off", ("server", "gallery"), False),
    ("PREVIEW_PROXY_SERVER_GALLERY", "YES", ("server", "gallery"), True),
    ("PREVIEW_PROXY_STORE_URL", "redis://127.0.0.1:6379/1", ("store", "url"), "redis://127.0.0.1:6379/1"),
    ("PREVIEW_PROXY_CACHE_ASSET_PREFIX", "/a/", ("cache", "asset_prefix"), "/a/"),
])
def test_each_environment_override(tmp_path: Path, name: str, value: str, attr: tuple[str, str],
                                   expected: object) -> None:
    cfg = build_config({"libraries": [lib(tmp_path)]}, {name: value})
    assert getattr(getattr(cfg, attr[0]), attr[1]) == expected


# ---- problems ---------------------------------------------------------------------------------------


def test_every_problem_at_once_naming_each_key(tmp_path: Path) -> None:
    raw = {
        "server": {"port": 70000, "public_url": "ftp://x/y", "redirect_max_age": -1, "colour": "red"},
        "cache": {"max_size": "lots", "asset_prefix": "assets"},
        "limits": {"max_source_bytes": 0, "origin_timeout": "soon", "render_concurrency": -2,
                   "queue_limit": 0, "max_frames": "3.5"},
        "faces": {"detector": "magic", "model": str(tmp_path / "missing.onnx")},
        "output": {"jpeg_quality": 101, "webp_quality": 0},
        "extras": {},
        "libraries": [lib(tmp_path)],
    }
    env = {"PREVIEW_PROXY_SERVER_HOST": "0.0.0.0", "PREVIEW_PROXY_CACHE_SIGN_TTL": "1h"}
    problems = problems_of(raw, env)
    expected = [("[server] port",), ("[server] public_url",), ("[server] redirect_max_age",),
                ("[server] colour", "unknown"), ("[cache] max_size", "lots"), ("[cache] asset_prefix",),
                ("[limits] max_source_bytes",), ("[limits] origin_timeout",),
                ("[limits] render_concurrency",), ("[limits] queue_limit",), ("[limits] max_frames",),
                ("[faces] detector",), ("[faces] model",), ("[output] jpeg_quality",),
                ("[output] webp_quality",), ("[extras]", "unknown"),
                ("PREVIEW_PROXY_CACHE_SIGN_TTL", "environment")]
    for words in expected:
        assert has(problems, *words), (words, problems)
    assert len(problems) == len(expected), problems
    message = str(ConfigError("f.toml", problems))
    assert "f.toml" in message and all(p in message for p in problems)


def test_type_errors_name_the_key(tmp_path: Path) -> None:
    problems = problems_of({"server": {"port": "eighty", "gallery": "maybe", "public_url": 5},
                            "cache": {"version_ttl": "x"}, "libraries": [lib(tmp_path)]})
    assert has(problems, "[server] port", "whole number")
    assert has(problems, "[server] gallery", "true or false")
    assert has(problems, "[server] public_url", "string")
    assert has(problems, "[cache] version_ttl", "number")
    assert has(problems_of({"cache": {"max_size": "100KiB"}, "libraries": [lib(tmp_path)]}),
               "[cache] max_size", "1MiB")
    assert has(problems_of({"server": {"port": True}, "libraries": [lib(tmp_path)]}), "[server] port")
    assert has(problems_of({"server": [], "libraries": [lib(tmp_path)]}), "[server]", "table")


def test_library_problems(tmp_path: Path) -> None:
    libraries = [
        "not a table",
        {"origin": str(tmp_path)},                                        # no id
        {"id": "bad id!", "origin": str(tmp_path)},
        {"id": "noorigin"},
        {"id": "gone", "origin": str(tmp_path / "missing")},
        {"id": "mnt", "origin": str(tmp_path), "mount": "media"},
        {"id": "flags", "origin": str(tmp_path), "multi_tenant": "yes", "public_read": 1, "secret": 5},
        {"id": "extra", "origin": str(tmp_path), "bucket": "b"},
        {"id": "sp", "origin": str(tmp_path), "spaces": {"bad space": {}, "ok": {"public_read": "no"}}},
        {"id": "dup", "origin": str(tmp_path), "mount": "/m/"},
        {"id": "dup", "origin": str(tmp_path), "mount": "/m/"},
        {"id": "api", "origin": str(tmp_path), "mount": "/api/v1/"},
        {"id": "assets", "origin": str(tmp_path), "mount": "/_assets/"},
        {"id": "web", "origin": "https://bucket.example.com/photos/"},   # fine: not checked on disk
    ]
    problems = problems_of({"libraries": libraries})
    expected = [("#1", "table"), ("#2 id", "required"), ("#3 id",), ("'noorigin'", "origin", "required"),
                ("'gone'", "origin", "does not exist"), ("'mnt'", "mount"), ("'flags'", "multi_tenant"),
                ("'flags'", "public_read"), ("'flags'", "secret"), ("'extra'", "bucket", "unknown key"),
                ("'sp'", "spaces.bad space"), ("'sp'", "spaces.ok.public_read"),
                ("id='dup'", "defined twice"), ("mount='/m/'", "two libraries"),
                ("mount='/api/v1/'", "clashes"), ("mount='/_assets/'", "clashes")]
    for words in expected:
        assert has(problems, *words), (words, problems)
    assert len(problems) == len(expected), problems
    assert not has(problems, "'web'")


def test_no_library_is_a_problem() -> None:
    assert has(problems_of({}), "[[libraries]]", "at least one")


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "absent.toml", {})
    assert err.value.problems == ["file not found"] and "absent.toml" in str(err.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(bad, {})
    assert "TOML" in err.value.problems[0]
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'[server]\nhost = "\xe9"\n')
    with pytest.raises(ConfigError):
        load_config(latin, {})


def test_unknown_environment_variable_of_a_section_is_a_problem(tmp_path: Path) -> None:
    env = {"PREVIEW_PROXY_LIMITS_MAX_SOURCE_BYTE": "1MiB", "PREVIEW_PROXY_CONFIG": "x.toml",
           "PREVIEW_PROXY_SERVER_PORT": "81"}
    problems = problems_of({"libraries": [lib(tmp_path)]}, env)
    assert problems == ["PREVIEW_PROXY_LIMITS_MAX_SOURCE_BYTE (environment): unknown key 'max_source_byte'"]


def test_library_shape_problems(tmp_path: Path) -> None:
    assert has(problems_of({"libraries": {"id": "a", "origin": str(tmp_path)}}), "[[libraries]]", "array")
    assert has(problems_of({"libraries": [lib(tmp_path, spaces="alice")]}), "id='lib' spaces", "table")
    assert has(problems_of({"libraries": [{"id": "x y", "origin": str(tmp_path), "colour": 1}]}),
               "#1 colour", "unknown key")


# ---- issue 17: numbers in range, typos in the environment, secrets from it ----------------------------


@pytest.mark.parametrize(("section", "key", "value"), [
    ("limits", "origin_timeout", float("nan")), ("cache", "version_ttl", float("inf")),
    ("limits", "origin_timeout", float("-inf")), ("cache", "version_ttl", "nan"),
])
def test_floats_must_be_finite(tmp_path: Path, section: str, key: str, value: object) -> None:
    problems = problems_of({section: {key: value}, "libraries": [lib(tmp_path)]})
    assert has(problems, f"[{section}] {key}", "finite"), problems


def test_floats_from_the_environment_must_be_finite(tmp_path: Path) -> None:
    problems = problems_of({"libraries": [lib(tmp_path)]}, {"PREVIEW_PROXY_LIMITS_ORIGIN_TIMEOUT": "nan"})
    assert has(problems, "PREVIEW_PROXY_LIMITS_ORIGIN_TIMEOUT", "finite"), problems


@pytest.mark.parametrize(("section", "key", "bad", "good"), [
    ("cache", "sign_ttl", -1, 60), ("cache", "sign_ttl", 0, 1), ("cache", "version_ttl", -0.5, 0),
    ("cache", "version_ttl", 10**6, 3600), ("output", "png_compression", 42, 9),
    ("output", "png_compression", -1, 0), ("server", "workers", -1, 0), ("server", "workers", 1000, 8),
])
def test_ranges(tmp_path: Path, section: str, key: str, bad: float, good: float) -> None:
    assert has(problems_of({section: {key: bad}, "libraries": [lib(tmp_path)]}), f"[{section}] {key}")
    build_config({section: {key: good}, "libraries": [lib(tmp_path)]})


def test_a_misspelled_section_in_the_environment_is_a_problem(tmp_path: Path) -> None:
    env = {"PREVIEW_PROXY_CACHEE_DIR": "/tmp", "PREVIEW_PROXY_SERVERPORT": "81",
           # not sections: the config file, a library's secret, a library's S3 credentials
           "PREVIEW_PROXY_CONFIG": "x.toml", "PREVIEW_PROXY_LIBRARY_LIB_SECRET": "x",
           "PREVIEW_PROXY_S3_LIB_ACCESS_KEY_ID": "AKIA", "PREVIEWPROXY_CACHE_DIR": "unrelated"}
    problems = [p for p in problems_of({"libraries": [lib(tmp_path)]}, env) if "no such config section" in p]
    assert len(problems) == 2, problems  # (the S3 variable is the S3 check's to judge, not a section)
    assert has(problems, "PREVIEW_PROXY_CACHEE_DIR", "no such config section")
    assert has(problems, "PREVIEW_PROXY_SERVERPORT", "no such config section")


def test_a_library_secret_from_the_environment(tmp_path: Path) -> None:
    libraries = [lib(tmp_path), {"id": "my-photos", "origin": str(tmp_path)}]
    env = {"PREVIEW_PROXY_LIBRARY_MY_PHOTOS_SECRET": "from-env", "PREVIEW_PROXY_LIBRARY_LIB_SECRET": "also"}
    cfg = build_config({"libraries": libraries}, env)
    assert [x.secret.reveal() for x in cfg.libraries] == ["also", "from-env"]
    assert "from-env" not in repr(cfg)
    problems = problems_of({"libraries": libraries}, {"PREVIEW_PROXY_LIBRARY_OTHER_SECRET": "x",
                                                      "PREVIEW_PROXY_LIBRARY_LIB_ORIGIN": "/"})
    assert len(problems) == 2 and all("LIBRARY_<ID>_SECRET" in p for p in problems), problems


def test_an_origin_scheme_that_is_not_supported(tmp_path: Path) -> None:
    problems = problems_of({"libraries": [lib(tmp_path, origin="ftp://files.example.com/photos")]})
    assert problems == ["[[libraries]] id='lib' origin: ftp:// origins are not supported "
                        "(a folder, or http://, https://, s3://)"]


def test_an_invalid_id_is_not_called_missing(tmp_path: Path) -> None:
    problems = problems_of({"libraries": [lib(tmp_path, id="Bad Id!")]})
    assert len(problems) == 1 and "'Bad Id!' is not a library id" in problems[0], problems
    assert "required" not in problems[0]


def test_several_workers_with_a_private_library_need_a_shared_store(tmp_path: Path) -> None:
    private = {"cache": {"sign_secret": "x"}, "libraries": [lib(tmp_path, public_read=False)]}
    assert has(problems_of({**private, "server": {"workers": 2}}), "[server] workers", "shared token store")
    assert has(problems_of(private, {"PREVIEW_PROXY_SERVER_WORKERS": "3"}), "shared token store")
    build_config({**private, "server": {"workers": 2}, "store": {"url": "redis://127.0.0.1:6379/0"}})
    build_config({**private, "server": {"workers": 1}})
    build_config({"server": {"workers": 2}, "libraries": [lib(tmp_path)]})  # public: nothing to share


def test_folders_unchecked_on_request(tmp_path: Path) -> None:
    """``serve`` validates all else first, then makes the demo's folder, then validates again."""
    raw = {"libraries": [lib(tmp_path / "not-yet")]}
    assert has(problems_of(raw), "does not exist")
    assert build_config(raw, check_folders=False).libraries[0].origin == str(tmp_path / "not-yet")
