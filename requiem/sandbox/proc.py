"""Process plumbing the engine-side backends share: subreaper, process trees, waiting on a pidfd."""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock: see requiem/__init__.py on imports
import errno
import fcntl
import os
import select
import sys
import time

# What subprocess.Popen calls: vfork + exec in C, no preexec_fn. Called directly, a spawn skips
# Popen's Python and `import subprocess` (~25M instructions of every cold start: locale, re,
# selectors, signal's enums). Its positional signature is private; 3.14 dropped allow_vfork.
from _posixsubprocess import fork_exec as _fork_exec

from requiem.sandbox.base import Exit

_ALLOW_VFORK = (True,) if sys.version_info < (3, 14) else ()

_PR_SET_CHILD_SUBREAPER = 36
_subreaper_lock = _thread.allocate_lock()
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
_devnull_lock = _thread.allocate_lock()


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


_apart: set[int] = set()  # our helper processes (requiem.object_writer): neither runs nor orphans


def keep_apart(pid: int, kept: bool = True) -> None:
    """Mark a child of ours as a helper process (or no longer), so no run takes it for its own."""
    if kept:
        _apart.add(pid)
    else:
        _apart.discard(pid)


def adopted() -> list[int]:
    """Children of this process no backend waits for: orphans re-parented to us as a subreaper."""
    return [pid for pid in children_of(os.getpid()) if pid not in _own and pid not in _apart]


def above_stdio(fd: int) -> int:
    """fd, or when it is one of 0-2 a close-on-exec copy above them (then fd is closed): for a
    pipe that must outlive a child's stdio being pointed elsewhere. On failure fd stays open."""
    if fd > 2:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return moved


def single_threaded() -> bool:
    """Whether this process has one thread, Python's or a native library's: only then is a
    fork safe (a lock another thread holds would stay held in the child)."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc: Python's own threads are all that can be counted
        import threading

        return threading.active_count() == 1


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
    """poll(), not select(): engines with many open files hold fds above 1024. The timeout is
    rounded up to whole milliseconds: down, a wait of less than one would return at once and
    its caller spin until its deadline."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if timeout_s is None:
        return bool(poller.poll(None))
    # -(-x // 1): ceil without `math`, an extension module every cold start would load.
    return bool(poller.poll(max(0, int(-(-timeout_s * 1000 // 1)))))


def spawn(argv: list[str], executable: str, *, stdin: int, stdout: int, stderr: int, cwd: str,
          env: dict[str, str], umask: int = -1, keep_fds: tuple[int, ...] = ()) -> int:
    """Start executable in a new session, as Popen(close_fds=True, start_new_session=True) does; its pid.

    Every other descriptor is closed in the child and the signals Python ignores are restored.
    A failure before or at exec raises OSError, naming cwd or the executable, as Popen's does.
    """
    env_list = []
    for key, value in env.items():
        if "=" in key:
            raise ValueError("illegal environment variable name")
        env_list.append(os.fsencode(key) + b"=" + os.fsencode(value))
    failure_read, failure_write = os.pipe2(os.O_CLOEXEC)
    try:
        failure_write = above_stdio(failure_write)  # the child's stdio are dup2'ed over 0-2
    except OSError:
        os.close(failure_read)
        os.close(failure_write)
        raise
    try:
        try:
            pid = _fork_exec(argv, (os.fsencode(executable),), True,
                             tuple(sorted({*keep_fds, failure_write})), cwd, env_list,
                             stdin, -1, -1, stdout, -1, stderr, failure_read, failure_write,
                             True, True, -1, None, None, None, umask, None, *_ALLOW_VFORK)
        finally:
            os.close(failure_write)
        failure = b""
        while chunk := os.read(failure_read, 50000):  # EOF at exec: the pipe is close-on-exec
            failure += chunk
    finally:
        os.close(failure_read)
    if failure:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        raise _spawn_error(failure, cwd, executable)
    return pid


def _spawn_error(report: bytes, cwd: str, executable: str) -> OSError:
    """The child's failure report as an OSError: `OSError:<hex errno>:` when the exec failed,
    `...:noexec` when chdir(cwd) did; anything else is a fault in the child before exec."""
    kind, hex_errno, detail = (report.split(b":", 2) + [b"", b""])[:3]
    try:
        code = int(hex_errno, 16) if kind == b"OSError" else 0
    except ValueError:
        code = 0
    if not code:
        return OSError(errno.EIO, f"the child failed before exec: {report.decode(errors='replace')}")
    return OSError(code, os.strerror(code), cwd if detail == b"noexec" else executable)


class PidfdChild:
    """A direct child of the engine, waited on through a pidfd (or by polling, where there is none)."""

    strays_possible = False

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._exit: Exit | None = None
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # kernels before 5.3, valgrind, seccomp profiles that deny it, EMFILE:
            self._pidfd = None  # the child runs already and must still be waited for and killed
        self._lock = _thread.allocate_lock()
        own(pid)

    def wait(self, timeout_s: float | None) -> Exit | None:
        """Wait up to timeout_s for the child to end; None if it is still running."""
        with self._lock:
            if self._exit is not None:
                return self._exit
            if self._pidfd is None:
                ended = _wait_polling(self.pid, timeout_s)
                if ended is None:
                    return None
                status, usage = ended
            else:
                if not wait_readable(self._pidfd, timeout_s):
                    return None
                _, status, usage = os.wait4(self.pid, 0)
                os.close(self._pidfd)
            disown(self.pid)
            self._exit = self._exit_of(status, usage)
            return self._exit

    def _exit_of(self, status: int, usage: object) -> Exit:
        if os.WIFSIGNALED(status):
            return Exit(None, os.WTERMSIG(status), rusage_dict(usage))
        return Exit(os.WEXITSTATUS(status), None, rusage_dict(usage))


def _wait_polling(pid: int, timeout_s: float | None) -> tuple[int, object] | None:
    """wait4 without a pidfd: (status, rusage) once pid ends, None at the timeout."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay = 0.0005
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            return status, usage
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
        delay = min(delay * 2, 0.05)
