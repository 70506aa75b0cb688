"""The stdlib stand-ins a cold start uses: named tuples without collections, threads without
threading (requiem.tuples, requiem.threads)."""

from __future__ import annotations

import _thread
import pickle
import sys
import time

import pytest

from requiem.contract import Request
from requiem.home import Home
from requiem.threads import Condition, Thread
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


def test_a_condition_wakes_its_waiter_and_times_out_alone() -> None:
    changed = Condition()
    seen: list[bool] = []

    def waiter() -> None:
        with changed:
            seen.append(changed.wait(10))

    thread = Thread(waiter)
    deadline = time.monotonic() + 10
    while True:  # notify only once the waiter waits, or the wake-up would be lost
        with changed:
            if changed._waiters:
                changed.notify_all()
                break
        assert time.monotonic() < deadline
        time.sleep(0.001)
    thread.join()
    assert seen == [True]
    with changed:
        started = time.monotonic()
        assert changed.wait(0.05) is False
        assert time.monotonic() - started >= 0.04 and changed._waiters == []


def test_a_condition_never_releases_the_lock_another_thread_holds() -> None:
    # What a wait() cut short by a second signal would do on leaving its caller's `with`.
    changed = Condition()
    held, done = _thread.allocate_lock(), _thread.allocate_lock()
    held.acquire()
    done.acquire()

    def holder() -> None:
        with changed:
            held.release()
            done.acquire()  # until the main thread has tried

    thread = Thread(holder)
    held.acquire()
    with pytest.raises(RuntimeError):
        changed.__exit__(None, None, None)
    assert changed._lock._is_owned() is False and changed._lock.acquire(False) is False
    done.release()
    thread.join()


def test_a_thread_is_joined_after_its_target_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    reported: list[BaseException | None] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda report: reported.append(report.exc_value))

    def fails() -> None:
        raise RuntimeError("reported as any thread's")

    Thread(fails).join()  # returns: a failed flusher must not hang close()
    deadline = time.monotonic() + 10
    while not reported and time.monotonic() < deadline:
        time.sleep(0.001)  # reported just after the thread let its joiners go
    assert [type(exc) for exc in reported] == [RuntimeError]
