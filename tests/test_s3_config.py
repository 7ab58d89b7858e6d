"""``[libraries.s3]`` (proxy/s3config.py): origin URLs, checks, where the keys come from, secrets hidden."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import ConfigError, build_config
from proxy.s3config import parse_s3_origin

# library "my-lib": upper-cased, "-" as "_"
MINE = {"PREVIEW_PROXY_S3_MY_LIB_ACCESS_KEY_ID": "ENVKEY",
        "PREVIEW_PROXY_S3_MY_LIB_SECRET_ACCESS_KEY": "envsk"}


def _raw(tmp_path: Path, s3: Any = None, origin: str = "s3://photos/base") -> dict[str, Any]:
    lib: dict[str, Any] = {"id": "my-lib", "origin": origin, "secret": "x"}
    if s3 is not None:
        lib["s3"] = s3
    return {"cache": {"dir": str(tmp_path / "cache")}, "libraries": [lib]}


def _problems(raw: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        build_config(raw, env or {})
    return err.value.problems


@pytest.mark.parametrize(("origin", "expected"), [
    ("s3://photos", ("photos", "")),
    ("s3://photos/", ("photos", "")),
    ("s3://my-bucket-1250000000/a/b/", ("my-bucket-1250000000", "a/b/")),
    ("s3://photos//a//b", ("photos", "a/b/")),
    ("s3://photos/a/../b", None),
    ("s3://", None),
    ("s3://x/a", None),  # one character is no bucket name anywhere
])
def test_origin_url(origin: str, expected: tuple[str, str] | None) -> None:
    assert parse_s3_origin(origin) == expected


def test_keys_from_the_config_first(tmp_path: Path) -> None:
    env = {**MINE, "AWS_ACCESS_KEY_ID": "AWSKEY", "AWS_SECRET_ACCESS_KEY": "awssk"}
    s3 = {"access_key_id": "CFGKEY", "secret_access_key": "cfg-secret-1", "endpoint": "http://127.0.0.1:9000"}
    lib = build_config(_raw(tmp_path, s3), env).libraries[0]
    assert lib.s3 is not None and lib.s3.access_key_id == "CFGKEY"
    assert lib.s3.secret_access_key.reveal() == "cfg-secret-1" and lib.s3.credentials_from == "the config"
    assert "cfg-secret-1" not in repr(lib) and "cfg-secret-1" not in str(lib.s3)


def test_keys_from_the_library_variables_then_aws(tmp_path: Path) -> None:
    aws = {"AWS_ACCESS_KEY_ID": "AWSKEY", "AWS_SECRET_ACCESS_KEY": "awssk", "AWS_SESSION_TOKEN": "tok"}
    # such variables are the library's keys, never a misspelled [s3] section or key
    s3 = build_config(_raw(tmp_path), {**aws, **MINE}).libraries[0].s3
    assert s3 is not None and (s3.access_key_id, s3.secret_access_key.reveal()) == ("ENVKEY", "envsk")
    assert not s3.session_token and s3.credentials_from.startswith("PREVIEW_PROXY_S3_MY_LIB_")
    s3 = build_config(_raw(tmp_path), aws).libraries[0].s3
    assert s3 is not None and (s3.access_key_id, s3.session_token.reveal()) == ("AWSKEY", "tok")
    s3 = build_config(_raw(tmp_path), {}).libraries[0].s3
    assert s3 is not None and not s3.access_key_id and s3.credentials_from == ""  # botocore's chain


def test_every_problem_at_once(tmp_path: Path) -> None:
    s3 = {"endpoint": "cos.ap-guangzhou.myqcloud.com", "addressing": "vhost", "region": "Guangzhou!",
          "access_key_id": "AK", "bucket": "b"}
    env = {"PREVIEW_PROXY_S3_MYLIB_SECRET_ACCESS_KEY": "typo in the library id"}
    problems = "\n".join(_problems(_raw(tmp_path, s3), env))
    assert 'write "https://cos.ap-guangzhou.myqcloud.com"' in problems
    assert "s3.addressing" in problems and "s3.region" in problems and "s3.bucket: unknown key" in problems
    assert "access key id without a secret" in problems
    assert "PREVIEW_PROXY_S3_MYLIB_SECRET_ACCESS_KEY (environment): names no key" in problems
    assert "PREVIEW_PROXY_S3_MY_LIB_SECRET_ACCESS_KEY" in problems  # the name it should have had
    assert "typo in the library id" not in problems


def test_s3_table_only_on_s3_origins(tmp_path: Path) -> None:
    problems = _problems(_raw(tmp_path, {"region": "eu-west-1"}, origin="http://127.0.0.1:1/"))
    assert any("s3: only for an s3:// origin" in p for p in problems)
    assert any("expected s3://bucket" in p for p in _problems(_raw(tmp_path, origin="s3://b/../x")))


def test_the_readme_s3_examples_are_valid(tmp_path: Path) -> None:
    import re
    import tomllib

    from conftest import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = [tomllib.loads(b) for b in re.findall(r"^```toml\n(.*?)^```", text, re.S | re.M)
                if "[libraries.s3]" in b]
    assert len(examples) == 3  # AWS, COS, a local MinIO/SeaweedFS
    for raw in examples:
        config = build_config({"cache": {"dir": str(tmp_path)}, **raw}, {})
        assert config.libraries[0].s3 is not None
    endpoints = [c["libraries"][0]["s3"].get("endpoint", "") for c in examples]
    assert endpoints[0] == "" and "myqcloud.com" in endpoints[1] and endpoints[2].startswith("http://127.0.0.1")
