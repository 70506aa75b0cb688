"""Sandbox backends behind one seam, with honest capability reports."""

from __future__ import annotations

import os
import threading

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
from requiem.sandbox.probe import machine_capabilities, probe

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
    "close_backends",
    "machine_capabilities",
    "probe",
    "select_backend",
]

BACKENDS = ("auto", "bwrap", "zygote", "none")
_lock = threading.Lock()
_backends: dict[str, Backend] = {}


def _make(name: str, found: dict, reason: str) -> Backend:
    from requiem.errors import SANDBOX_UNAVAILABLE, RequiemError

    if name == "bwrap":
        if not found["bwrap"]["ok"]:
            raise RequiemError(SANDBOX_UNAVAILABLE, f"sandbox backend 'bwrap' does not work here: "
                                                    f"{found['bwrap']['evidence']}", backend="bwrap")
        from requiem.sandbox.bwrap import BwrapBackend

        return BwrapBackend(found, reason or "asked for by name; its canary passed")
    if name == "zygote":
        from requiem.sandbox.zygote import ZygoteBackend

        try:
            return ZygoteBackend(found, reason or "asked for by name")
        except OSError as exc:
            raise RequiemError(SANDBOX_UNAVAILABLE, f"the zygote could not start: {exc}",
                               backend="zygote") from exc
    return NoneBackend(reason or "asked for by name: plain spawn, nothing enforced")


def select_backend(name: str = "auto", cache_dir: str | os.PathLike[str] | None = None) -> Backend:
    """The backend to run with ("auto", "bwrap", "zygote", "none"), reused for the process.

    "auto" takes bwrap if its canary works, else the zygote if it enforces anything, else none, and the
    report's backend_reason says why. A named backend that does not work here raises sandbox_unavailable.
    """
    from requiem.errors import SANDBOX_UNAVAILABLE, RequiemError
    from requiem.sandbox.plan import choose

    if name not in BACKENDS:
        raise RequiemError(SANDBOX_UNAVAILABLE, f"unknown sandbox backend {name!r}; known: {', '.join(BACKENDS)}")
    with _lock:
        if name not in _backends:
            found = probe(cache_dir) if name != "none" else {}
            real, reason = choose(found) if name == "auto" else (name, "")
            if real not in _backends:
                _backends[real] = _make(real, found, reason)
            _backends[name] = _backends[real]
        return _backends[name]


def close_backends() -> None:
    """Stop long-lived helpers (the zygote); later select_backend calls start fresh ones."""
    with _lock:
        unique = {id(b): b for b in _backends.values()}
        _backends.clear()
    for backend in unique.values():
        backend.close()


def check_required(report: SandboxReport, require: list[str]) -> None:
    """Refuse (sandbox_unavailable) when a capability the policy requires is not enforced for this run."""
    from requiem.errors import SANDBOX_UNAVAILABLE, RequiemError

    unknown = [cap for cap in require if cap not in CAPABILITIES]
    missing = [cap for cap in require if cap in CAPABILITIES and cap not in report.enforced]
    if unknown or missing:
        detail = {cap: f"{report.state(cap)}: {report.reasons.get(cap, '')}" for cap in missing}
        detail.update({cap: "not a sandbox capability" for cap in unknown})
        raise RequiemError(SANDBOX_UNAVAILABLE,
                           f"required sandbox capabilities not enforced by {report.backend}: "
                           f"{', '.join(missing + unknown)}", missing=detail)
