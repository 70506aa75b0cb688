"""Sandbox backends behind one seam, with honest capability reports."""

from requiem.sandbox.base import (
    CAPABILITIES,
    Backend,
    Child,
    Exit,
    LaunchSpec,
    Rlimits,
    SandboxReport,
)
from requiem.sandbox.none import NoneBackend

__all__ = [
    "CAPABILITIES",
    "Backend",
    "Child",
    "Exit",
    "LaunchSpec",
    "NoneBackend",
    "Rlimits",
    "SandboxReport",
    "select_backend",
]


def select_backend(name: str = "none") -> Backend:
    """The backend to run commands with; unknown or unavailable names raise sandbox_unavailable."""
    from requiem.errors import SANDBOX_UNAVAILABLE, RequiemError

    if name == "none":
        return NoneBackend()
    raise RequiemError(SANDBOX_UNAVAILABLE, f"sandbox backend {name!r} is not available")
