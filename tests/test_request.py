"""``proxy.request``: raw path decoding, traversal spellings, query parsing, sizing precedence."""

from __future__ import annotations

from dataclasses import replace

import pytest

from proxy.errors import InvalidParameter, InvalidPath, NotFound
from proxy.request import (
    Credentials,
    FileRef,
    PreviewOptions,
    decode_file_path,
    is_preview,
    parse_credentials,
    parse_file_route,
    parse_options,
    parse_query,
)
from proxy.types import Fit, Sizing

# ---- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("photo.jpg", "photo.jpg"),
    ("a/b/c.jpg", "a/b/c.jpg"),
    ("a%2Fb.jpg", "a/b.jpg"),                      # %2F is a separator, as the API says
    ("a%2fb.jpg", "a/b.jpg"),
    ("my%20photo.jpg", "my photo.jpg"),
    ("my photo.jpg", "my photo.jpg"),
    ("a+b.jpg", "a+b.jpg"),                        # '+' is not a space in a path
    ("%E7%9B%B8%E5%86%8C%20%E4%B8%80/%E7%85%A7%E7%89%87%201.jpg", "相册 一/照片 1.jpg"),
    ("相册 一/照片 1.jpg", "相册 一/照片 1.jpg"),
    ("%252e%252e/x.jpg", "%2e%2e/x.jpg"),          # decoded exactly once: a literal name, not '..'
    ("..a/b..jpg", "..a/b..jpg"),                  # dots inside a name are fine
    ("...", "..."),
])
def test_decode_file_path_accepts(raw: str, expected: str) -> None:
    assert decode_file_path(raw) == expected


TRAVERSALS = [
    "..", "../etc/passwd", "a/../b.jpg", "a/..", "%2e%2e/etc/passwd", "%2E%2E/x", ".%2e/x", "%2e./x",
    "a/%2e%2e/%2e%2e/etc/passwd", "..%2Fetc%2Fpasswd", "a%2F..%2F..%2Fb", "a%2f%2e%2e%2fb",
    ".", "./a.jpg", "a/./b.jpg", "%2e/a.jpg",
    "", "a//b.jpg", "a/", "/etc/passwd", "//etc/passwd", "%2Fetc%2Fpasswd", "a%2F%2Fb",
    "a.jpg%00.png", "%00", "a\x00b",
    "..\\..\\windows\\win.ini", "a%5C..%5Cb.jpg", "a%5cb.jpg", "a\\b.jpg",
    "%ff.jpg", "%c3%28.jpg", "%ed%a0%80.jpg", "%e7%9b.jpg",    # not UTF-8 (incl. a lone surrogate)
    "a%0Ab.jpg", "a%7Fb.jpg", "a%01b.jpg",
]


@pytest.mark.parametrize("raw", TRAVERSALS)
def test_decode_file_path_refuses(raw: str) -> None:
    with pytest.raises(InvalidPath) as err:
        decode_file_path(raw)
    assert err.value.status == 400 and err.value.code == "InvalidPath"


def test_decode_file_path_refuses_a_path_too_long() -> None:
    decode_file_path("a" * 4000)
    with pytest.raises(InvalidPath):
        decode_file_path("%41" * 5000)


def test_parse_file_route_splits_library_space_and_path() -> None:
    ref = parse_file_route("lib/-/%E7%9B%B8%E5%86%8C%20%E4%B8%80/%E7%85%A7%E7%89%87%201.JPG")
    assert ref == FileRef("lib", "-", "相册 一/照片 1.JPG")
    assert ref.name == "照片 1.JPG" and ref.extension == "jpg"
    assert parse_file_route("lib/space_1/a/b.png") == FileRef("lib", "space_1", "a/b.png")
    assert FileRef("l", "-", "noext").extension == ""


@pytest.mark.parametrize("raw", ["lib/-/..", "lib/-//etc/passwd", "lib/-/", "lib/-/a%2F..%2F..%2Fx",
                                 "lib/-/%00", "lib/-/a%5Cb"])
def test_parse_file_route_checks_the_file_path(raw: str) -> None:
    with pytest.raises(InvalidPath):
        parse_file_route(raw)


def test_parse_file_route_errors() -> None:
    with pytest.raises(NotFound) as err:
        parse_file_route("lib/-")
    assert err.value.code == "RouteNotFound"
    with pytest.raises(NotFound) as err:
        parse_file_route("l%20b/-/a.jpg")
    assert err.value.code == "LibraryNotFound"
    with pytest.raises(NotFound) as err:
        parse_file_route(("x" * 65) + "/-/a.jpg")
    assert err.value.code == "LibraryNotFound"
    with pytest.raises(InvalidParameter) as err:
        parse_file_route("lib/a.b/x.jpg")
    assert "SpaceId" in err.value.message
    with pytest.raises(InvalidParameter):
        parse_file_route("lib/" + "s" * 65 + "/x.jpg")


# ---- query ----------------------------------------------------------------------------------------


def test_parse_query_keeps_blank_values_and_first_value_wins() -> None:
    assert parse_query("preview&size=200") == {"preview": "", "size": "200"}
    assert parse_query("preview=&size=%32%30%30") == {"preview": "", "size": "200"}
    assert parse_query("size=1&size=2") == {"size": "1"}
    assert parse_query("") == {}
    assert parse_query("name=%E7%85%A7") == {"name": "照"}


@pytest.mark.parametrize("raw", ["size=%ff", "a=%c3%28"])
def test_parse_query_refuses_bad_utf8(raw: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_query(raw)


def test_parse_query_refuses_too_many_fields() -> None:
    parse_query("&".join(f"k{i}=1" for i in range(60)))
    with pytest.raises(InvalidParameter):
        parse_query("&".join(f"k{i}=1" for i in range(100)))


@pytest.mark.parametrize(("raw", "expected"), [
    ("preview", True), ("preview=", True), ("preview=1", True), ("size=2&preview", True),
    ("preview=0", False), ("size=200", False), ("", False), ("previews", False),
])
def test_is_preview(raw: str, expected: bool) -> None:
    assert is_preview(parse_query(raw)) is expected


def options(raw: str) -> PreviewOptions:
    return parse_options(parse_query(raw))


@pytest.mark.parametrize(("raw", "sizing"), [
    ("", Sizing()),
    ("preview", Sizing()),
    ("size=200", Sizing(Fit.SQUARE, size=200)),
    ("scale=50", Sizing(Fit.SCALE, size=50)),
    ("width_size=300", Sizing(Fit.BOX, width=300)),
    ("height_size=300", Sizing(Fit.BOX, height=300)),
    ("width_size=300&height_size=100", Sizing(Fit.BOX, width=300, height=100)),
    # first match wins; the others are ignored, even when they are garbage
    ("size=200&scale=50&width_size=10&height_size=10", Sizing(Fit.SQUARE, size=200)),
    ("scale=50&width_size=10", Sizing(Fit.SCALE, size=50)),
    ("width_size=10&scale=50", Sizing(Fit.SCALE, size=50)),
    ("size=200&scale=abc&width_size=-1", Sizing(Fit.SQUARE, size=200)),
    ("scale=5&width_size=0&height_size=x", Sizing(Fit.SCALE, size=5)),
    ("size=1", Sizing(Fit.SQUARE, size=1)),
    ("size=4096", Sizing(Fit.SQUARE, size=4096)),
    ("scale=1", Sizing(Fit.SCALE, size=1)),
    ("scale=100", Sizing(Fit.SCALE, size=100)),
    ("width_size=8192&height_size=1", Sizing(Fit.BOX, width=8192, height=1)),
    ("size=007", Sizing(Fit.SQUARE, size=7)),
])
def test_sizing_precedence(raw: str, sizing: Sizing) -> None:
    assert options(raw).sizing == sizing


@pytest.mark.parametrize(("raw", "name"), [
    ("size=0", "size"), ("size=4097", "size"), ("size=-5", "size"), ("size=1.5", "size"),
    ("size=abc", "size"), ("size=", "size"), ("size=1e3", "size"), ("size=0x10", "size"),
    ("size=99999999999999999999", "size"), ("size=%EF%BC%91", "size"),   # a full-width digit
    ("size=abc&scale=50", "size"),
    ("scale=0", "scale"), ("scale=101", "scale"), ("scale=50%25", "scale"),
    ("width_size=0", "width_size"), ("width_size=8193", "width_size"), ("width_size=w", "width_size"),
    ("height_size=0", "height_size"), ("height_size=8193", "height_size"),
    ("width_size=100&height_size=", "height_size"),
    ("frame_number=0", "frame_number"), ("frame_number=101", "frame_number"),
    ("frame_number=x", "frame_number"),
    ("format=bmp", "format"), ("format=svg", "format"),
])
def test_out_of_range_names_the_parameter(raw: str, name: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        options(raw)
    assert err.value.status == 400 and err.value.code == "InvalidParameter"
    assert name in err.value.message


def test_frame_number_and_format() -> None:
    assert options("frame_number=1").frame_number == 1
    assert options("frame_number=100").frame_number == 100
    assert options("").frame_number == 0
    for raw, fmt in [("format=jpeg", "jpeg"), ("format=jpg", "jpeg"), ("format=PNG", "png"),
                     ("format=webp", "webp"), ("format=avif", "avif"), ("format=gif", "gif"),
                     ("format=", ""), ("", "")]:
        assert options(raw).format == fmt, raw


def test_canonical_form_covers_every_pixel_option() -> None:
    def canonical(query: str, family: str = "jpeg") -> str:
        return replace(options(query), format=options(query).format or family).canonical()

    a = canonical("size=200")
    assert a == canonical("size=200&scale=50&frame_number=3")
    # frame_number only changes an output that can be animated
    assert canonical("size=200&frame_number=3", "gif") != canonical("size=200", "gif")
    assert canonical("size=200&format=webp") != a
    seen = {canonical(q, "gif") for q in
            ["", "size=20", "scale=20", "width_size=20", "height_size=20", "width_size=20&height_size=20",
             "size=20&frame_number=2", "size=20&format=png"]}
    assert len(seen) == 8


def test_options_query_reads_back_to_the_same_options() -> None:
    for raw in ["", "size=20", "scale=5", "width_size=20", "height_size=7", "width_size=3&height_size=4",
                "size=20&frame_number=2&format=webp", "debug=faces"]:
        assert options(options(raw).query()) == options(raw), raw


def test_parse_credentials() -> None:
    assert parse_credentials({"access_token": "t", "user_id": "u"}, None) == Credentials("t", "u")
    assert parse_credentials({}, "Bearer abc ") == Credentials("abc", "")
    assert parse_credentials({}, "bearer abc") == Credentials("abc", "")
    assert parse_credentials({"access_token": "q"}, "Bearer h") == Credentials("q", "")
    assert parse_credentials({}, "Basic abc") == Credentials("", "")
