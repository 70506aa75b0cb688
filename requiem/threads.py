"""A joinable thread and a condition variable, built on `_thread` as threading builds its own.

A batch's group commit needs one background thread and one condition variable. Importing
threading for them would cost every batch's start ~4 ms (it imports functools, which imports
collections); see requiem/__init__.py on imports.
"""

from __future__ import annotations

import _thread

TYPE_CHECKING = False  # typing is for checkers only
if TYPE_CHECKING:
    from typing import Any, Callable


class Condition:
    """A lock with wait() and notify_all(), as threading.Condition has them (held once at a
    time: wait() lets go of one level of it)."""

    def __init__(self) -> None:
        # Owner-checked, as threading.Condition's own: a wait() cut short by a signal, before
        # it holds the lock again, makes the caller's release fail instead of releasing the
        # lock another thread holds meanwhile.
        self._lock = _thread.RLock()
        self._waiters: list[Any] = []

    def __enter__(self) -> Condition:
        self._lock.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Let go of the lock until notified (or timeout seconds pass); hold it again on return.
        Whether it was notified."""
        if timeout is None:
            timeout = -1
        waiter = _thread.allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        self._lock.release()
        notified = False
        try:
            notified = waiter.acquire(True, timeout)
        finally:
            self._lock.acquire()  # on an interrupt too: the caller's `with` releases it
            if not notified:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass  # notified after the timeout: notify_all took it already
        return notified

    def notify_all(self) -> None:
        """Wake every waiter; called with the lock held."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.release()


class Thread:
    """target() running in a new thread (which ends with the process, as a daemon's does)."""

    def __init__(self, target: Callable[[], None]) -> None:
        self._ended = _thread.allocate_lock()
        self._ended.acquire()
        _thread.start_new_thread(self._run, (target,))

    def _run(self, target: Callable[[], None]) -> None:
        try:
            target()
        finally:
            self._ended.release()

    def join(self) -> None:
        """Wait until target() has returned or raised."""
        self._ended.acquire()
        self._ended.release()
