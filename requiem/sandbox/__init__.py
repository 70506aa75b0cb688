"""Sandbox backends behind one seam, with honest capability reports."""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock: see requiem/__init__.py on imports
import os

from requiem.sandbox.base import CAPABILITIES, Exit, LaunchSpec, Rlimits, SandboxReport

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from requiem.sandbox.protocols import Backend

__all__ = [
    "BACKENDS",
    "CAPABILITIES",
    "Backend",
    "Child",
    "Exit",
    "LaunchSpec",
    "NoneBackend",
    "Rlimits",
    "SandboxReport",
    "check_required",
    "machine_capabilities",
    "select_backend",
]

BACKENDS = ("auto", "bwrap", "zygote", "none")


def __getattr__(name: str) -> object:
    # Loaded on first use: the plain backend pulls in subprocess and ctypes, which `requiem
    # health` never needs, a run on the plain backend never needs the probe, and the protocols
    # need typing, which only checkers and tests do.
    if name in ("Backend", "Child"):
        from requiem.sandbox import protocols

        return getattr(protocols, name)
    if name == "NoneBackend":
        from requiem.sandbox.none import NoneBackend

        return NoneBackend
    if name == "machine_capabilities":
        from requiem.sandbox.probe import machine_capabilities

        return machine_capabilities
    raise AttributeError(f"module 'requiem.sandbox' has no attribute {name!r}")
_lock = _thread.allocate_lock()
_backends: dict[str, Backend] = {}


def _make(name: str, found: dict) -> Backend:
    """A working backend of this name, its reports saying why it is the one in use."""
    from requiem.errors import SANDBOX_UNAVAILABLE, RequiemError

    bwrap = found["bwrap"]
    if name == "bwrap":
        if not bwrap["ok"]:
            raise RequiemError(SANDBOX_UNAVAILABLE, f"sandbox backend 'bwrap' does not work here: "
                                                    f"{bwrap['evidence']}", backend="bwrap")
        from requiem.sandbox.bwrap import BwrapBackend

        return BwrapBackend(found, f"bwrap canary passed ({bwrap['evidence']})")
    from requiem.sandbox.zygote import ZygoteBackend

    why = "asked for by name; bwrap works here too" if bwrap["ok"] else f"bwrap unusable ({bwrap['evidence']})"
    try:
        return ZygoteBackend(found, why)
    except OSError as exc:
        raise RequiemError(SANDBOX_UNAVAILABLE, f"the zygote could not start: {exc}", backend="zygote") from exc


def select_backend(name: str = "auto", cache_dir: str | os.PathLike[str] | None = None) -> Backend:
    """The backend to run with ("auto", "bwrap", "zygote", "none"), reused for the process.

    "auto" takes bwrap if its canary works, else the zygote if it enforces anything, else none, and the
    report's backend_reason says why. A named backend that does not work here raises sandbox_unavailable.
    """
    from requiem.errors import SANDBOX_UNAVAILABLE, RequiemError
    from requiem.sandbox.none import NoneBackend

    if name not in BACKENDS:
        raise RequiemError(SANDBOX_UNAVAILABLE, f"unknown sandbox backend {name!r}; known: {', '.join(BACKENDS)}")
    with _lock:
        # A backend its user closed (a Runner's close()) is started afresh for the next one.
        if name in _backends and getattr(_backends[name], "alive", True):
            return _backends[name]
        if name == "none":
            _backends[name] = NoneBackend("asked for by name: plain spawn, nothing enforced")
            return _backends[name]
        from requiem.sandbox.plan import choose
        from requiem.sandbox.probe import probe

        found = probe(cache_dir)
        real, reason = choose(found) if name == "auto" else (name, "")
        cached = _backends.get(real)
        try:
            backend = cached if cached is not None and getattr(cached, "alive", True) else (
                NoneBackend(reason) if real == "none" else _make(real, found))
        except RequiemError as exc:
            if name != "auto":
                raise
            backend = NoneBackend(f"{reason}; but {exc.message}")  # said, not silent
        if real != "none":
            _backends[real] = backend
        _backends[name] = backend
        return backend


def check_required(report: SandboxReport, require: list[str]) -> None:
    """Refuse (sandbox_unavailable) when a capability the policy requires is not enforced for this run."""
    if not require:
        return
    from requiem.errors import SANDBOX_UNAVAILABLE, RequiemError

    unknown = [cap for cap in require if cap not in CAPABILITIES]
    missing = [cap for cap in require if cap in CAPABILITIES and cap not in report.enforced]
    if unknown or missing:
        detail = {cap: f"{report.state(cap)}: {report.reasons.get(cap, '')}" for cap in missing}
        detail.update({cap: "not a sandbox capability" for cap in unknown})
        raise RequiemError(SANDBOX_UNAVAILABLE,
                           f"required sandbox capabilities not enforced by {report.backend}: "
                           f"{', '.join(missing + unknown)}", missing=detail)
