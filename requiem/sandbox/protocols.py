"""The sandbox seam's protocols: what a backend (bwrap, zygote, none) and a started command offer."""

from __future__ import annotations

from typing import Protocol

from requiem.sandbox.base import Exit, LaunchSpec, SandboxReport


class Child(Protocol):
    """A started command."""

    pid: int
    # After kill_tree: whether a process of the run may still live (and hold its captures).
    strays_possible: bool

    def wait(self, timeout_s: float | None) -> Exit | None:
        """Wait up to timeout_s for the command to end; None if it is still running."""

    def kill_tree(self) -> None:
        """Kill the command and every process it started, setsid escapees included; reap them."""


class Backend(Protocol):
    """A way of starting commands (bwrap, zygote, none), with the truth about what it enforces."""

    name: str

    def report(self, spec: LaunchSpec) -> SandboxReport:
        """What a run with this spec gets from this backend on this machine."""

    def spawn(self, spec: LaunchSpec) -> Child:
        """Start the command; raise OSError when it cannot be started."""

    def close(self) -> None:
        """Release long-lived helpers (the zygote)."""
