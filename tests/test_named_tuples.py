"""requiem.tuples: named tuples as collections.namedtuple makes them, without its import."""

from __future__ import annotations

import pickle

import pytest

from requiem.contract import Request
from requiem.home import Home
from requiem.tuples import named_tuple


@named_tuple
class Point:
    """A point."""

    x: int
    y: int = 0

    def moved(self, by: int) -> "Point":
        return self._replace(x=self.x + by)


def test_a_named_tuple_behaves_as_a_namedtuple() -> None:
    point = Point(1)
    assert point == (1, 0) and isinstance(point, tuple) and (point.x, point.y) == (1, 0)
    assert Point(x=2, y=3) == Point(2, 3) and Point._make([4, 5]) == (4, 5)
    assert point.moved(2) == Point(3, 0) and point._asdict() == {"x": 1, "y": 0}
    assert repr(point) == "Point(x=1, y=0)" and Point.__doc__ == "A point."
    assert Point._fields == ("x", "y") and Point._field_defaults == {"y": 0}
    assert pickle.loads(pickle.dumps(point)) == point
    match point:
        case Point(x, y):
            assert (x, y) == (1, 0)


def test_a_named_tuple_refuses_what_a_namedtuple_refuses() -> None:
    with pytest.raises(TypeError):
        Point()  # x has no default
    with pytest.raises(TypeError):
        Point(1, 2, 3)
    with pytest.raises(TypeError):
        Point(1, x=1)
    with pytest.raises(ValueError, match="z"):
        Point(1)._replace(z=1)
    with pytest.raises(TypeError):
        Point._make([1])
    with pytest.raises(AttributeError):
        Point(1).x = 2  # type: ignore[misc]
    with pytest.raises(TypeError, match="follows one with"):
        @named_tuple
        class Wrong:
            a: int = 0
            b: int


def test_the_core_value_types_are_named_tuples() -> None:
    home = Home.resolve("/tmp/h")
    assert home._replace(cas_location="/c").cas_location == "/c"
    assert "command" in Request._fields
