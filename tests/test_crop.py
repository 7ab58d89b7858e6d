"""The face crop rule (geometry.crop_box, geometry.keep_faces): pure arithmetic, no pixels."""

from __future__ import annotations

import pytest

from proxy.geometry import centre_box, crop_box, keep_faces
from proxy.types import Box, Face


def contains(box: Box, face: Face) -> bool:
    return (box.left <= face.x and box.top <= face.y and face.x + face.w <= box.right
            and face.y + face.h <= box.bottom)


def inside_image(box: Box, width: int, height: int) -> bool:
    return box.left >= 0 and box.top >= 0 and box.right <= width and box.bottom <= height


def test_no_face_is_the_centre() -> None:
    assert crop_box(600, 400, 400) == centre_box(600, 400, 400) == Box(100, 0, 400, 400)
    assert crop_box(300, 500, 300) == Box(0, 100, 300, 300)


def test_one_face_is_centred_with_room_above() -> None:
    face = Face(450, 100, 60, 80)
    box = crop_box(1000, 400, 400, [face])
    assert contains(box, face) and inside_image(box, 1000, 400)
    # centred on the head (the face grown up for hair): the face sits a little below the middle
    assert abs((box.left + box.width / 2) - (face.x + face.w / 2)) <= 4


@pytest.mark.parametrize(("x", "y"), [(0, 150), (940, 150), (470, 0), (470, 320)])
def test_faces_at_every_edge_keep_the_box_in_the_image(x: int, y: int) -> None:
    face = Face(x, y, 60, 80)
    box = crop_box(1000, 400, 300, [face])
    assert inside_image(box, 1000, 400) and contains(box, face)


@pytest.mark.parametrize(("width", "height"), [(1200, 500), (500, 1200)])
def test_portrait_and_landscape(width: int, height: int) -> None:
    side = min(width, height)
    face = Face(width * 0.8, height * 0.8, 50, 60) if width < height else Face(width * 0.85, 200, 50, 60)
    box = crop_box(width, height, side, [face])
    assert contains(box, face) and inside_image(box, width, height) and box.width == box.height == side


def test_the_union_of_several_faces() -> None:
    faces = [Face(600, 150, 50, 60), Face(800, 170, 55, 65)]
    box = crop_box(1500, 500, 400, faces)
    assert all(contains(box, f) for f in faces)
    assert 600 + 55 - 200 <= box.left <= 600  # around the pair, not the centre of the image


def test_when_the_group_cannot_fit_the_largest_face_is_kept() -> None:
    small, large = Face(50, 100, 40, 50), Face(1300, 120, 90, 110)
    box = crop_box(1500, 500, 400, [small, large])
    assert contains(box, large) and not contains(box, small)


def test_the_largest_face_keeps_the_neighbours_that_fit() -> None:
    large, near, far = Face(700, 100, 90, 110), Face(850, 120, 50, 60), Face(100, 100, 50, 60)
    box = crop_box(1500, 500, 400, [far, large, near])
    assert contains(box, large) and contains(box, near) and not contains(box, far)


def test_a_face_larger_than_the_square_keeps_its_top() -> None:
    face = Face(50, 100, 300, 400)  # a close-up portrait cropped to a 300 px square
    box = crop_box(400, 800, 300, [face])
    assert box.top <= face.y and inside_image(box, 400, 800)


def test_weak_and_tiny_faces_are_dropped() -> None:
    real, weak, tiny = Face(100, 100, 80, 90, 0.95), Face(500, 100, 80, 90, 0.3), Face(700, 50, 6, 7, 0.99)
    assert keep_faces([real, weak, tiny], 1000, 600) == [real]


def test_a_square_source_is_the_whole_image() -> None:
    assert crop_box(500, 500, 500, [Face(0, 0, 40, 40)]) == Box(0, 0, 500, 500)
