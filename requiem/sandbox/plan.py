"""The plan: which steps a run gets from a backend here, and the report those steps earn (the truth rules)."""

from __future__ import annotations

import os
import resource

from requiem.sandbox._layout import SCRATCH_DIRS, SYSTEM_DIRS
from requiem.sandbox.base import LaunchSpec, SandboxReport
from requiem.tuples import named_tuple

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

State = tuple[str, str]
_RLIMITS = (("cpu_seconds", "CPU"), ("address_space_bytes", "AS"), ("open_files", "NOFILE"),
            ("file_size_bytes", "FSIZE"), ("core_bytes", "CORE"), ("processes", "NPROC"))
_VIEW = f"read-only {' '.join(SYSTEM_DIRS)}, writable workspace only, private {' '.join(SCRATCH_DIRS)}"
_MASKED = "; the Requiem home inside the workspace is hidden"


@named_tuple
class Plan:
    """What one run will get: the steps to apply, and the report they earn when every step succeeds."""

    report: SandboxReport
    namespaces: bool = False
    netns: bool = False
    landlock_abi: int = 0
    seccomp: bool = False
    unix_sockets_only: bool = False
    drop_caps: bool = False
    mdwe: bool = False
    rlimits: dict[str, int] = {}
    required_steps: tuple[str, ...] = ()


def _ok(probe: dict[str, Any], name: str) -> bool:
    return bool(probe.get(name, {}).get("ok"))


def _ev(probe: dict[str, Any], name: str) -> str:
    return str(probe.get(name, {}).get("evidence", f"{name} not probed"))


def rlimits_of(spec: LaunchSpec) -> dict[str, int]:
    """The requested limits, clamped to this process's hard limits (root here lacks CAP_SYS_RESOURCE)."""
    limits = {}
    for attr, name in _RLIMITS:
        value = getattr(spec.rlimits, attr)
        if value is not None:
            hard = resource.getrlimit(getattr(resource, "RLIMIT_" + name))[1]
            limits[name] = value if hard == resource.RLIM_INFINITY else min(value, hard)
    return limits


def command_uid(spec: LaunchSpec) -> int:
    return spec.run_as[0] if spec.run_as else os.geteuid()


def _rlimits(applied: bool, why_not: str, limits: dict[str, int], uid: int, evidence: str) -> State:
    if not applied:
        return "unsupported", why_not
    text = ", ".join(f"{k}={v}" for k, v in limits.items()) or "none requested"
    if uid == 0:
        return "partial", f"{text}; RLIMIT_NPROC does not bind uid 0 (run as a non-root uid to enforce it)"
    return "enforced", f"{text} (probe: {evidence})"


def _mitigations(caps: bool, caps_evidence: str, mdwe_applied: bool, probe: dict[str, Any],
                 mdwe_missing: str) -> State:
    if not caps:
        return "unsupported", f"capabilities not dropped: {caps_evidence}"
    base = f"CapEff = CapBnd = 0 ({caps_evidence})"
    if mdwe_applied:
        return "enforced", f"{base}; MDWE on ({_ev(probe, 'mdwe')})"
    if not _ok(probe, "mdwe"):
        return "enforced", f"{base}; this kernel has no MDWE ({_ev(probe, 'mdwe')})"
    return "partial", f"{base}; MDWE available but {mdwe_missing}"


def _network(spec: LaunchSpec, evidence: str) -> State:
    """A network namespace, and no host unix socket mounted unless the caller binds extra paths."""
    if spec.allow_network:
        return "unsupported", "the policy allows network"
    if spec.readonly_paths:
        # connect() needs no write access, so a socket file on a read-only bind still answers.
        return "partial", (f"network namespace with only lo (probe: {evidence}), but pathname unix sockets "
                           f"under the extra read-only paths stay connectable")
    return "enforced", f"network namespace with only lo, host unix sockets not mounted (probe: {evidence})"


def bwrap_plan(probe: dict[str, Any], spec: LaunchSpec) -> Plan:
    """bwrap: namespaces, the layout, caps dropped, seccomp by fd, rlimits through prlimit."""
    canary, limits = probe["bwrap"], rlimits_of(spec)
    status = canary.get("status", {})
    # prlimit(2) on bwrap's init, or prlimit(1) around bwrap under run_as
    prlimit = _ok(probe, "rlimits") and (not spec.run_as or bool(probe["tools"].get("prlimit")))
    # Seccomp 2 alone could be a filter the engine inherited (Docker, systemd): count ours only,
    # built for this architecture and proved by the probe's distinctive-errno check.
    from requiem.sandbox import _seccomp

    seccomp = status.get("Seccomp") == "2" and _seccomp.supported() and _ok(probe, "seccomp")
    states: dict[str, State] = {
        "workspace_confinement": ("enforced", f"{_VIEW}{_MASKED * bool(spec.masked_paths)} "
                                              f"(bwrap mount namespace; canary: {canary['evidence']})"),
        "network_isolation": _network(spec, _ev(probe, "netns")),
        "process_isolation": ("enforced", "pid namespace, --die-with-parent, killing its init ends the namespace"),
        "seccomp_bpf": ("enforced", f"deny list answers ENOSYS, foreign arch killed (canary: Seccomp 2; "
                                    f"probe: {_ev(probe, 'seccomp')})") if seccomp else (
            "unsupported", f"filter not in force in the canary: {canary['evidence']}"),
        "no_new_privs": ("enforced", "canary: NoNewPrivs 1") if status.get("NoNewPrivs") == "1" else (
            "unsupported", f"canary: {canary['evidence']}"),
        "process_mitigations": _mitigations(True, f"canary: {canary['evidence']}", False, probe,
                                            "bwrap cannot apply it (use the zygote with mdwe)"),
        "rlimits": _rlimits(prlimit, f"{_ev(probe, 'rlimits')}; prlimit(1), needed under run_as: "
                                     f"{probe['tools'].get('prlimit') or 'not on PATH'}",
                            limits, command_uid(spec), _ev(probe, "rlimits")),
    }
    return Plan(SandboxReport.from_states(states, "bwrap"), namespaces=True, netns=not spec.allow_network,
                seccomp=seccomp, drop_caps=True, rlimits=limits if prlimit else {})


def zygote_plan(probe: dict[str, Any], spec: LaunchSpec) -> Plan:
    """The zygote: whatever primitives the probe proved, applied per run and checked step by step."""
    ns = all(_ok(probe, p) for p in ("userns", "mountns", "pidns", "caps_ns"))
    netns = ns and _ok(probe, "netns") and not spec.allow_network
    abi = int(probe.get("landlock", {}).get("abi", 0)) if _ok(probe, "landlock") else 0
    seccomp, caps = _ok(probe, "seccomp"), _ok(probe, "caps_ns" if ns else "caps_flat")
    mdwe = spec.mdwe and _ok(probe, "mdwe")
    limits = rlimits_of(spec) if _ok(probe, "rlimits") else {}
    unix_only = seccomp and not spec.allow_network and not netns
    no_ns = f"no namespaces ({_ev(probe, 'userns')}; {_ev(probe, 'mountns')})"
    states: dict[str, State] = {}
    if ns:
        states["workspace_confinement"] = ("enforced", f"{_VIEW}{_MASKED * bool(spec.masked_paths)} "
                                           f"(mount namespace: {_ev(probe, 'mountns')})"
                                           + (f"; Landlock ABI {abi} on top" if abi else ""))
    elif abi >= 3 and spec.masked_paths:
        states["workspace_confinement"] = ("partial", f"Landlock ABI {abi}: writes only beneath the workspace, "
                                           f"but without a mount namespace the Requiem home inside it "
                                           f"cannot be hidden ({no_ns})")
    elif abi >= 3:
        states["workspace_confinement"] = ("enforced", f"Landlock ABI {abi}: writes only beneath the workspace "
                                           f"({_ev(probe, 'landlock')}); {no_ns}: /tmp is not private")
    elif abi:
        states["workspace_confinement"] = ("partial", f"Landlock ABI {abi} cannot deny truncate; {no_ns}")
    else:
        states["workspace_confinement"] = ("unsupported", f"{no_ns}; Landlock: {_ev(probe, 'landlock')}")
    if spec.allow_network or netns:
        states["network_isolation"] = _network(spec, _ev(probe, "netns"))
    elif unix_only:
        states["network_isolation"] = ("partial", f"no network namespace ({_ev(probe, 'netns')}); seccomp allows "
                                       "only AF_UNIX sockets, but host pathname unix sockets stay reachable")
    elif abi >= 4:
        states["network_isolation"] = ("partial", f"Landlock ABI {abi} denies TCP only; UDP and unix sockets "
                                       f"stay reachable ({_ev(probe, 'netns')})")
    else:
        states["network_isolation"] = ("unsupported", f"no network namespace ({_ev(probe, 'netns')}), no seccomp")
    if ns:
        states["process_isolation"] = ("enforced", "pid namespace per run, parent-death signal chain, "
                                                   "killing its init ends the namespace")
    elif _ok(probe, "subreaper") and abi >= 6:
        states["process_isolation"] = ("enforced", "per-run subreaper collects setsid escapees for the tree kill; "
                                                   "Landlock scope blocks signals and ptrace out of the sandbox")
    elif _ok(probe, "subreaper"):
        states["process_isolation"] = ("partial", "per-run subreaper and tree kill, but host processes of the "
                                                  f"same uid can be signalled ({no_ns})")
    else:
        states["process_isolation"] = ("unsupported", f"{no_ns}; subreaper: {_ev(probe, 'subreaper')}")
    states["seccomp_bpf"] = ("enforced", f"deny list answers ENOSYS, foreign arch killed "
                                         f"(probe: {_ev(probe, 'seccomp')})") if seccomp else (
        "unsupported", _ev(probe, "seccomp"))
    states["no_new_privs"] = ("enforced", f"probe: {_ev(probe, 'nnp')}") if _ok(probe, "nnp") else (
        "unsupported", _ev(probe, "nnp"))
    caps_name = "caps_ns" if ns else "caps_flat"
    states["process_mitigations"] = _mitigations(caps, _ev(probe, caps_name), mdwe, probe,
                                                 "not requested (opt-in: it breaks JIT runtimes)")
    states["rlimits"] = _rlimits(_ok(probe, "rlimits"), _ev(probe, "rlimits"), limits, command_uid(spec),
                                 _ev(probe, "rlimits"))
    # The steps the zygote must report done for this run, or the spawn is refused (see ZygoteBackend.spawn).
    required = ["pdeathsig", "no_new_privs", "rlimits", "exec"]
    required += ["userns", "id_maps", "namespaces", "base_mounts", "mounts"] if ns else ["subreaper"]
    required += ["landlock_rules", "landlock_workspace", "landlock"] * bool(abi)
    required += ["drop_caps"] * caps + ["mdwe"] * mdwe + ["seccomp"] * seccomp
    required += ["run_as"] * bool(spec.run_as) + ["hostname"] * bool(ns and spec.hostname)
    return Plan(SandboxReport.from_states(states, "zygote"), namespaces=ns, netns=netns, landlock_abi=abi,
                seccomp=seccomp, unix_sockets_only=unix_only, drop_caps=caps, mdwe=mdwe, rlimits=limits,
                required_steps=tuple(required))


def useful(report: SandboxReport) -> bool:
    """Whether a backend enforces anything at all here (else `auto` says none, rather than pretend)."""
    return bool(report.enforced or report.partial)


def choose(probe: dict[str, Any]) -> tuple[str, str]:
    """The best backend here and why: bwrap if its canary passed, else the zygote if it enforces anything."""
    if _ok(probe, "bwrap"):
        return "bwrap", f"bwrap canary passed ({_ev(probe, 'bwrap')})"
    default = LaunchSpec("/bin/true", ["true"], {}, "/", "/", -1, -1)
    if useful(zygote_plan(probe, default).report):
        return "zygote", f"bwrap unusable ({_ev(probe, 'bwrap')}); the zygote applies what the probe proved"
    return "none", f"bwrap unusable ({_ev(probe, 'bwrap')}) and no primitive works here"
