"""The plain backend: a bare spawn that enforces nothing and says so."""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock: see requiem/__init__.py on imports
import os

from requiem.sandbox.base import LaunchSpec, SandboxReport
from requiem.sandbox.proc import (
    PidfdChild,
    adopted,
    become_subreaper,
    descendants,
    devnull,
    others_live,
    spawn,
)

__all__ = ["NoneBackend", "PlainChild", "become_subreaper"]

# POSIX fixes SIGKILL at 9; `import signal` would build its enums on every cold start (~11M instructions).
_SIGKILL = 9
# Held from the spawn until the child is owned, and while orphans are listed: in between, a fresh
# child of another thread would look like an orphan.
_spawning = _thread.allocate_lock()


def _belongs(orphan: int, session: int, alone: bool) -> bool:
    """An adopted orphan is this run's when it kept the run's session, or no other run is live."""
    try:
        return alone or os.getsid(orphan) == session
    except ProcessLookupError:
        return False


class PlainChild(PidfdChild):
    """A command started with a bare spawn in its own session."""

    def kill_tree(self) -> None:
        running = self._exit is None
        victims = [self.pid, *descendants(self.pid)] if running else []
        # Orphans re-parented to us (we are a subreaper). With other runs live, a setsid escapee
        # cannot be told apart from theirs, so only those still in this run's session are taken.
        with _spawning:
            alone = not others_live(self.pid)
            orphans = [p for p in adopted() if p != self.pid and _belongs(p, self.pid, alone)]
        # A setsid escapee cannot be told apart from another live run's: it may outlive us.
        self.strays_possible = not alone
        for orphan in orphans:
            victims += [orphan, *descendants(orphan)]
        try:
            os.killpg(self.pid, _SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in victims:
            try:
                os.kill(pid, _SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.wait(None)
        for orphan in orphans:
            try:
                os.waitpid(orphan, 0)
            except ChildProcessError:
                pass


class NoneBackend:
    """Plain spawn (vfork/posix_spawn path, no preexec_fn): every capability unsupported."""

    name = "none"

    def __init__(self, reason: str = "") -> None:
        become_subreaper()
        self.reason = reason
        self._report = SandboxReport.from_states({}, self.name, reason)  # the same for every run

    def report(self, spec: LaunchSpec) -> SandboxReport:
        return self._report

    def spawn(self, spec: LaunchSpec) -> PlainChild:
        with _spawning:
            return PlainChild(spawn(spec.argv, spec.executable, stdin=devnull(), stdout=spec.stdout_fd,
                                    stderr=spec.stderr_fd, cwd=spec.cwd, env=spec.env, umask=spec.umask))

    def close(self) -> None:
        pass
