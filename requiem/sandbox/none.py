"""The plain backend: a bare spawn that enforces nothing and says so."""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import threading

from requiem.sandbox.base import Exit, LaunchSpec, SandboxReport

_PR_SET_CHILD_SUBREAPER = 36
_subreaper_lock = threading.Lock()
_subreaper_set = False
_live_children: set[int] = set()


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants, so setsid escapees can still be killed."""
    global _subreaper_set
    with _subreaper_lock:
        if not _subreaper_set:
            libc = ctypes.CDLL(None, use_errno=True)
            _subreaper_set = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        return _subreaper_set


def _rusage_dict(usage: os.struct_rusage | None) -> dict[str, float]:  # type: ignore[name-defined]
    if usage is None:
        return {}
    return {
        "cpu_user_s": round(usage.ru_utime, 6),
        "cpu_sys_s": round(usage.ru_stime, 6),
        "max_rss_kib": float(usage.ru_maxrss),
    }


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        for child in _children_of(stack.pop()):
            found.append(child)
            stack.append(child)
    return found


class PlainChild:
    """A command started with a bare spawn in its own session."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.pid = popen.pid
        self._popen = popen
        self._exit: Exit | None = None
        self._pidfd = os.pidfd_open(self.pid)
        _live_children.add(self.pid)

    def wait(self, timeout_s: float | None) -> Exit | None:
        if self._exit is not None:
            return self._exit
        ready, _, _ = select.select([self._pidfd], [], [], timeout_s)
        if not ready:
            return None
        _, status, usage = os.wait4(self.pid, 0)
        self._popen.returncode = status  # keep Popen from reaping a pid that is no longer ours
        _live_children.discard(self.pid)
        os.close(self._pidfd)
        if os.WIFSIGNALED(status):
            self._exit = Exit(None, os.WTERMSIG(status), _rusage_dict(usage))
        else:
            self._exit = Exit(os.WEXITSTATUS(status), None, _rusage_dict(usage))
        return self._exit

    def kill_tree(self) -> None:
        victims = [] if self._exit is not None else [self.pid]
        victims += _descendants(self.pid) if self._exit is None else []
        # Orphans re-parented to us (we are a subreaper) that belong to no live run of ours.
        me = os.getpid()
        orphans = [p for p in _children_of(me) if p not in _live_children and p != self.pid]
        for orphan in orphans:
            victims += [orphan, *_descendants(orphan)]
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._exit is None:
            self.wait(None)
        for orphan in orphans:
            try:
                os.waitpid(orphan, 0)
            except ChildProcessError:
                pass


class NoneBackend:
    """Plain spawn (vfork/posix_spawn path, no preexec_fn): every capability unsupported."""

    name = "none"

    def __init__(self) -> None:
        become_subreaper()

    def report(self, spec: LaunchSpec) -> SandboxReport:
        return SandboxReport.from_states({}, self.name)

    def spawn(self, spec: LaunchSpec) -> PlainChild:
        popen = subprocess.Popen(
            spec.argv,
            executable=spec.executable,
            stdin=subprocess.DEVNULL,
            stdout=spec.stdout_fd,
            stderr=spec.stderr_fd,
            cwd=spec.cwd,
            env=spec.env,
            start_new_session=True,
            umask=spec.umask,
            close_fds=True,
        )
        return PlainChild(popen)

    def close(self) -> None:
        pass
