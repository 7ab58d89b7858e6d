"""Leaf value types shared by every layer (no imports from the project)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class MediaKind(enum.Enum):
    IMAGE = "image"
    VIDEO = "video"
    FILE = "file"


class Fit(enum.Enum):
    """How the output size is derived from the source size (API section 1, first match wins)."""

    SQUARE = "size"      # size=S: cover S x S, then crop
    SCALE = "scale"      # scale=P percent
    BOX = "box"          # width_size and/or height_size: fit inside, keep the aspect ratio
    ORIGINAL = "orig"    # none given


@dataclass(frozen=True, slots=True)
class Sizing:
    fit: Fit = Fit.ORIGINAL
    size: int = 0        # SQUARE: side; SCALE: percent
    width: int = 0       # BOX: 0 = follows the aspect ratio
    height: int = 0

    def canonical(self) -> str:
        match self.fit:
            case Fit.SQUARE:
                return f"s{self.size}"
            case Fit.SCALE:
                return f"p{self.size}"
            case Fit.BOX:
                return f"w{self.width}h{self.height}"
            case _:
                return "o"


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned rectangle in pixels: left, top, width, height."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


@dataclass(frozen=True, slots=True)
class Face:
    """A detected face in source-image coordinates (float pixels) with the detector's score 0..1."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0


# A face detector bound to its settings: a decoded image (a pyvips.Image; this module imports no
# image library) -> the faces in that image's coordinates.
# (a decoded image, the (width, height) of the source it was decoded from) -> faces in the source's
# coordinates
FaceFinder = Callable[[Any, tuple[int, int]], Sequence[Face]]
