"""Process plumbing the engine-side backends share: subreaper, process trees, waiting on a pidfd."""

from __future__ import annotations

import ctypes
import os
import select
import subprocess
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
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper_set = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        return _subreaper_set


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


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

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self._popen = popen
        self._exit: Exit | None = None
        self._pidfd = os.pidfd_open(self.pid)
        self._lock = threading.Lock()

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
            self._exit = self._decode(status, rusage_dict(usage))
            self._on_exit()
            return self._exit

    def _decode(self, status: int, rusage: dict[str, float]) -> Exit:
        if os.WIFSIGNALED(status):
            return Exit(None, os.WTERMSIG(status), rusage)
        return Exit(os.WEXITSTATUS(status), None, rusage)

    def _on_exit(self) -> None:
        """Hook for subclasses that track live children."""
