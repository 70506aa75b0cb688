"""Process plumbing the engine-side backends share: subreaper, process trees, waiting on a pidfd."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading

from requiem.sandbox.base import Exit

_PR_SET_CHILD_SUBREAPER = 36
_subreaper_lock = threading.Lock()
_subreaper_set = False


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants, so setsid escapees can still be killed."""
    global _subreaper_set
    with _subreaper_lock:
        if not _subreaper_set:
            _subreaper_set = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        return _subreaper_set


def _prctl(option: int, value: int) -> bool:
    from requiem import libc

    try:
        return libc.call("prctl", option, value, 0, 0, 0) == 0
    except (AttributeError, OSError):
        return False


_devnull: list[int] = []
_devnull_lock = threading.Lock()


def devnull() -> int:
    """A read-only /dev/null descriptor kept for the process: every child's stdin."""
    if not _devnull:
        with _devnull_lock:
            if not _devnull:
                _devnull.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    return _devnull[0]


_own: set[int] = set()  # our direct children that some backend waits for; other children are adopted orphans


def own(pid: int) -> None:
    _own.add(pid)


def disown(pid: int) -> None:
    _own.discard(pid)


def others_live(pid: int) -> bool:
    """Whether any direct child other than pid is still waited for (another run in flight)."""
    return bool(_own - {pid})


def adopted() -> list[int]:
    """Children of this process no backend waits for: orphans re-parented to us as a subreaper."""
    return [pid for pid in children_of(os.getpid()) if pid not in _own]


def helper_argv(module: str, call: str, *args: str) -> list[str]:
    """Run one of this package's stdlib-only `_` modules in an isolated `python -I -S` (imported, so cached)."""
    here = os.path.dirname(os.path.abspath(__file__))
    return [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {here!r}); import {module}; "
                                             f"{module}.{call}", *args]


def children_of(pid: int) -> list[int]:
    # os.open and os.read: a text-mode open() costs four more syscalls, once per run or more.
    try:
        fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        parts = []
        while chunk := os.read(fd, 65536):
            parts.append(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    return [int(p) for p in b"".join(parts).split()]


def descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        for child in children_of(stack.pop()):
            found.append(child)
            stack.append(child)
    return found


def rusage_dict(usage: object | None) -> dict[str, float]:
    if usage is None:
        return {}
    return {
        "cpu_user_s": round(usage.ru_utime, 6),  # type: ignore[attr-defined]
        "cpu_sys_s": round(usage.ru_stime, 6),  # type: ignore[attr-defined]
        "max_rss_kib": float(usage.ru_maxrss),  # type: ignore[attr-defined]
    }


def wait_readable(fd: int, timeout_s: float | None) -> bool:
    """poll(), not select(): engines with many open files hold fds above 1024."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout_s is None else max(0, int(timeout_s * 1000))))


class PidfdChild:
    """A direct child of the engine (started by Popen), waited on through a pidfd."""

    strays_possible = False

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self._popen = popen
        self._exit: Exit | None = None
        self._pidfd = os.pidfd_open(self.pid)
        self._lock = threading.Lock()
        own(self.pid)

    def wait(self, timeout_s: float | None) -> Exit | None:
        """Wait up to timeout_s for the child to end; None if it is still running."""
        with self._lock:
            if self._exit is not None:
                return self._exit
            if not wait_readable(self._pidfd, timeout_s):
                return None
            _, status, usage = os.wait4(self.pid, 0)
            self._popen.returncode = status  # keep Popen from reaping a pid that is no longer ours
            os.close(self._pidfd)
            disown(self.pid)
            self._exit = self._exit_of(status, usage)
            return self._exit

    def _exit_of(self, status: int, usage: object) -> Exit:
        if os.WIFSIGNALED(status):
            return Exit(None, os.WTERMSIG(status), rusage_dict(usage))
        return Exit(os.WEXITSTATUS(status), None, rusage_dict(usage))
