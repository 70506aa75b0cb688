"""The plain backend: a bare spawn that enforces nothing and says so."""

from __future__ import annotations

import os
import signal
import subprocess

from requiem.sandbox.base import LaunchSpec, SandboxReport
from requiem.sandbox.proc import PidfdChild, adopted, become_subreaper, descendants

__all__ = ["NoneBackend", "PlainChild", "become_subreaper"]


class PlainChild(PidfdChild):
    """A command started with a bare spawn in its own session."""

    def kill_tree(self) -> None:
        running = self._exit is None
        victims = [self.pid, *descendants(self.pid)] if running else []
        # Orphans re-parented to us (we are a subreaper) that belong to no live run of ours.
        orphans = [p for p in adopted() if p != self.pid]
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
