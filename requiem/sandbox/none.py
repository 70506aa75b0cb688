"""The plain backend: a bare spawn that enforces nothing and says so."""

from __future__ import annotations

import os
import signal
import subprocess

from requiem.sandbox.base import LaunchSpec, SandboxReport
from requiem.sandbox.proc import PidfdChild, become_subreaper, children_of, descendants

__all__ = ["NoneBackend", "PlainChild", "become_subreaper"]

_live_children: set[int] = set()


class PlainChild(PidfdChild):
    """A command started with a bare spawn in its own session."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        super().__init__(popen)
        _live_children.add(self.pid)

    def _on_exit(self) -> None:
        _live_children.discard(self.pid)

    def kill_tree(self) -> None:
        running = self._exit is None
        victims = [self.pid, *descendants(self.pid)] if running else []
        # Orphans re-parented to us (we are a subreaper) that belong to no live run of ours.
        orphans = [p for p in children_of(os.getpid()) if p not in _live_children and p != self.pid]
        for orphan in orphans:
            victims += [orphan, *descendants(orphan)]
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
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

    def report(self, spec: LaunchSpec) -> SandboxReport:
        return SandboxReport.from_states({}, self.name, self.reason)

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
