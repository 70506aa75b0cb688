"""The lock between CAS writers and an executing GC: writers share it, the GC takes it alone.

A run holds the shared side from its first CAS put until the spool record that references its
objects is durable, so a GC that folds the spool and then deletes can never miss a root.
"""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock: see requiem/__init__.py on imports
import fcntl
import os


def _open(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # a new store: its root is made on first use
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def _lock(path: str, mode: int) -> int:
    fd = _open(path)
    try:
        fcntl.flock(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


# Gate and guard descriptors of the store used last, open but unlocked between holds: opening
# both files cost a hold ~13 of its ~17 us, once per run of a batch. A holder takes a pair of
# its own (flock belongs to the open file, so concurrent holders must not share one); only
# the last store's are kept, so a process that visits many stores keeps a few descriptors.
_MAX_IDLE = 8
_idle_root: str | None = None
_idle: list[tuple[int, int]] = []
_idle_lock = _thread.allocate_lock()
# Fork events (one as a fork begins, one as it ends in the parent), in all and by forking
# thread: a hold that spans one of its own thread's forks is shared with the child.
_fork_events = 0
_fork_events_by_thread: dict[int, int] = {}


def _take_pair(root: str) -> tuple[int, int]:
    with _idle_lock:
        if root == _idle_root and _idle:
            return _idle.pop()
    gate = _open(os.path.join(root, "gc.gate"))
    try:
        return gate, _open(os.path.join(root, "gc.lock"))
    except BaseException:
        os.close(gate)
        raise


def _give_back(root: str, pair: tuple[int, int]) -> None:
    global _idle_root
    closing = [pair]
    with _idle_lock:
        if root != _idle_root:
            closing += _idle
            _idle.clear()
            _idle_root = root
        if len(_idle) < _MAX_IDLE:
            _idle.append(closing.pop(0))
    for fds in closing:
        _close(fds)


def _close(pair: tuple[int, int]) -> None:
    for fd in pair:
        os.close(fd)


def _still_named(fd: int, path: str) -> bool:
    """Whether path still names the file fd has open (a store removed and made again does not)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _count_fork() -> None:
    global _fork_events
    _fork_events += 1
    forker = _thread.get_ident()
    _fork_events_by_thread[forker] = _fork_events_by_thread.get(forker, 0) + 1


def _forget_idle() -> None:
    """In a forked child: the idle pairs are the parent's open files; a flock on them is the parent's."""
    global _idle_root, _idle_lock
    _idle_lock = _thread.allocate_lock()
    for fds in _idle:
        _close(fds)
    _idle.clear()
    _idle_root = None


os.register_at_fork(before=_count_fork, after_in_parent=_count_fork, after_in_child=_forget_idle)


class write_guard:  # noqa: N801 - used as a function: `with write_guard(root):`
    """Hold while storing objects and spooling the record that references them.

    Shared among writers; a collecting GC waits for holders to finish and keeps new ones out
    (the gate stops a stream of writers from starving it). Costs four flocks and a stat when no
    GC runs. One object is one hold: make a new one for the next.
    """

    def __init__(self, cas_root: str | os.PathLike[str]) -> None:
        self._root = os.fspath(cas_root)
        self._lock_path = os.path.join(self._root, "gc.lock")
        self._pair: tuple[int, int] | None = None

    def __enter__(self) -> None:
        if self._pair is not None:
            raise RuntimeError("this write_guard is held already; make one per hold")
        self._owner, self._thread = os.getpid(), _thread.get_ident()
        self._forks_seen = _fork_events, _fork_events_by_thread.get(self._thread, 0)
        while True:
            gate, guard = pair = _take_pair(self._root)
            try:
                fcntl.flock(gate, fcntl.LOCK_SH)
                try:
                    fcntl.flock(guard, fcntl.LOCK_SH)
                finally:
                    fcntl.flock(gate, fcntl.LOCK_UN)
                # Locked, then checked: a GC locks the file the name holds now.
                if _still_named(guard, self._lock_path):
                    self._pair = pair
                    return
            except BaseException:
                _close(pair)
                raise
            _close(pair)  # kept from a store since removed or replaced: open the new one

    def __exit__(self, *exc_info: object) -> None:
        pair, self._pair = self._pair, None
        assert pair is not None, "write_guard left without being entered"
        any_forks, own_forks = self._forks_seen
        if os.getpid() != self._owner or _fork_events_by_thread.get(self._thread, 0) != own_forks:
            # This thread forked inside the hold, and the child goes on in this code: parent and
            # child share these open files, so an unlock by either would end the other's hold
            # too. A close ends only its own.
            _close(pair)
            return
        try:
            fcntl.flock(pair[1], fcntl.LOCK_UN)
        except BaseException:
            _close(pair)  # closing the last descriptor of the open file releases it too
            raise
        if _fork_events != any_forks:
            _close(pair)  # another thread's fork copied these files into a child: not for reuse
            return
        _give_back(self._root, pair)


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
