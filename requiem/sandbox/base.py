"""The sandbox seam's values: what a backend is told (LaunchSpec), reports (SandboxReport), returns (Exit).

The Backend and Child protocols are in requiem.sandbox.protocols (typing, for checkers).
"""

from __future__ import annotations

from requiem.tuples import named_tuple

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

CAPABILITIES = (
    "workspace_confinement",
    "rlimits",
    "process_isolation",
    "network_isolation",
    "seccomp_bpf",
    "no_new_privs",
    "process_mitigations",
)


# Named tuples, not dataclasses: importing dataclasses costs ~10 ms on every CLI start.
@named_tuple
class SandboxReport:
    """Which capabilities hold for a run (or on this machine), each with the reason for its state."""

    enforced: tuple[str, ...] = ()
    partial: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = CAPABILITIES
    reasons: dict[str, str] = {}
    backend: str = "none"
    backend_reason: str = ""

    def state(self, capability: str) -> str:
        if capability in self.enforced:
            return "enforced"
        if capability in self.partial:
            return "partial"
        return "unsupported"

    def to_json(self, with_reasons: bool = True) -> dict[str, Any]:
        """The contract's `{enforced[], partial[], unsupported[]}` shape, reasons beside it."""
        doc: dict[str, Any] = {
            "enforced": sorted(self.enforced),
            "partial": sorted(self.partial),
            "unsupported": sorted(self.unsupported),
        }
        if with_reasons:
            doc["reasons"] = dict(sorted(self.reasons.items()))
            doc["backend"] = self.backend
            doc["backend_reason"] = self.backend_reason
        return doc

    @classmethod
    def from_states(cls, states: dict[str, tuple[str, str]], backend: str,
                    backend_reason: str = "") -> "SandboxReport":
        """Build a report from {capability: (state, reason)}; unnamed capabilities are unsupported."""
        buckets: dict[str, list[str]] = {"enforced": [], "partial": [], "unsupported": []}
        reasons = {}
        for cap in CAPABILITIES:
            state, reason = states.get(cap, ("unsupported", f"{backend} backend does not provide it"))
            buckets[state].append(cap)
            reasons[cap] = reason
        return cls(tuple(buckets["enforced"]), tuple(buckets["partial"]),
                   tuple(buckets["unsupported"]), reasons, backend, backend_reason)


@named_tuple
class Rlimits:
    """Resource limits a run asks for; None means "leave as inherited"."""

    cpu_seconds: int | None = None
    address_space_bytes: int | None = None
    open_files: int | None = None
    file_size_bytes: int | None = None
    core_bytes: int | None = 0
    processes: int | None = None


@named_tuple
class LaunchSpec:
    """Everything a backend needs to start one command; paths are absolute host paths."""

    executable: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    workspace: str
    stdout_fd: int
    stderr_fd: int
    umask: int = 0o022
    hostname: str | None = None
    allow_network: bool = False
    rlimits: Rlimits = Rlimits()
    # Extra host paths the command may read (e.g. a toolchain outside /usr); bound read-only.
    readonly_paths: tuple[str, ...] = ()
    # (uid, gid) the command runs as; None keeps the engine's. Needs root to differ from the engine's.
    run_as: tuple[int, int] | None = None
    # Memory-deny-write-execute: opt-in, because it breaks JIT runtimes (JVM, V8, LuaJIT).
    mdwe: bool = False
    # Paths inside the workspace the command must not see (the Requiem home, the CAS): each is
    # covered by an empty private tmpfs after the workspace is bound.
    masked_paths: tuple[str, ...] = ()


@named_tuple
class Exit:
    """How a child ended: exit code or signal, plus its resource usage (outside any digest)."""

    exit_code: int | None
    signal: int | None
    rusage: dict[str, float]
