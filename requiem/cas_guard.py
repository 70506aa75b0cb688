"""The lock between CAS writers and an executing GC: writers share it, the GC takes it alone.

A run holds the shared side from its first CAS put until the spool record that references its
objects is durable, so a GC that folds the spool and then deletes can never miss a root.
"""

from __future__ import annotations

import fcntl
import os


def _lock(path: str, mode: int) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # a new store: its root is made on first use
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


class write_guard:  # noqa: N801 - used as a function: `with write_guard(root):`
    """Hold while storing objects and spooling the record that references them.

    Shared among writers; a collecting GC waits for holders to finish and keeps new ones out
    (the gate stops a stream of writers from starving it). Costs two flocks when no GC runs.
    The hold ends when its descriptor is closed: a child forked meanwhile keeps its own copy
    until it execs or exits, and closing either ends only that one. One object is one hold.
    """

    def __init__(self, cas_root: str | os.PathLike[str]) -> None:
        self._root = os.fspath(cas_root)
        self._guard: int | None = None

    def __enter__(self) -> None:
        self._take(0)

    def try_enter(self) -> bool:
        """Enter only if no GC holds or waits for the guard; False (not entered) if one does."""
        try:
            self._take(fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _take(self, flags: int) -> None:
        if self._guard is not None:
            raise RuntimeError("this write_guard is held already; make one per hold")
        gate = _lock(os.path.join(self._root, "gc.gate"), fcntl.LOCK_SH | flags)
        try:
            self._guard = _lock(os.path.join(self._root, "gc.lock"), fcntl.LOCK_SH | flags)
        finally:
            os.close(gate)

    def __exit__(self, *exc_info: object) -> None:
        guard, self._guard = self._guard, None
        assert guard is not None, "write_guard left without being entered"
        os.close(guard)


def hold_shared(cas_root: str | os.PathLike[str]) -> int:
    """Take one more shared hold for a writer already inside write_guard; close the fd to end it.

    It skips the gate: a GC holding the gate waits for the guard, so a holder of the guard
    queueing at the gate would deadlock with it. A group commit uses this to keep its runs'
    objects guarded until their records are durable, after each run's own guard is gone.
    """
    return _lock(os.path.join(cas_root, "gc.lock"), fcntl.LOCK_SH)


class exclusive_guard:  # noqa: N801 - used as a function: `with exclusive_guard(root):`
    """Held by an executing GC: waits for writers to finish and keeps new ones out."""

    def __init__(self, cas_root: str | os.PathLike[str]) -> None:
        self._root = os.fspath(cas_root)

    def __enter__(self) -> None:
        self._gate = _lock(os.path.join(self._root, "gc.gate"), fcntl.LOCK_EX)
        try:
            self._guard = _lock(os.path.join(self._root, "gc.lock"), fcntl.LOCK_EX)
        except BaseException:
            os.close(self._gate)
            raise

    def __exit__(self, *exc_info: object) -> None:
        try:
            os.close(self._guard)
        finally:
            os.close(self._gate)
