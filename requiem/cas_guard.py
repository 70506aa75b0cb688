"""The lock between CAS writers and an executing GC: writers share it, the GC takes it alone.

A run holds the shared side from its first CAS put until the spool record that references its
objects is durable, so a GC that folds the spool and then deletes can never miss a root.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Iterator


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


@contextmanager
def write_guard(cas_root: str | os.PathLike[str]) -> Iterator[None]:
    """Hold while storing objects and spooling the record that references them.

    Shared among writers; a collecting GC waits for holders to finish and keeps new ones out
    (the gate stops a stream of writers from starving it). Costs two flocks when no GC runs.
    """
    gate = _lock(os.path.join(cas_root, "gc.gate"), fcntl.LOCK_SH)
    try:
        guard = _lock(os.path.join(cas_root, "gc.lock"), fcntl.LOCK_SH)
    finally:
        os.close(gate)
    try:
        yield
    finally:
        os.close(guard)


def hold_shared(cas_root: str | os.PathLike[str]) -> int:
    """Take one more shared hold for a writer already inside write_guard; close the fd to end it.

    It skips the gate: a GC holding the gate waits for the guard, so a holder of the guard
    queueing at the gate would deadlock with it. A group commit uses this to keep its runs'
    objects guarded until their records are durable, after each run's own guard is gone.
    """
    return _lock(os.path.join(cas_root, "gc.lock"), fcntl.LOCK_SH)


@contextmanager
def exclusive_guard(cas_root: str | os.PathLike[str]) -> Iterator[None]:
    """Held by an executing GC: waits for writers to finish and keeps new ones out."""
    gate = _lock(os.path.join(cas_root, "gc.gate"), fcntl.LOCK_EX)
    try:
        guard = _lock(os.path.join(cas_root, "gc.lock"), fcntl.LOCK_EX)
        try:
            yield
        finally:
            os.close(guard)
    finally:
        os.close(gate)
