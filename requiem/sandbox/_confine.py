"""Confine the calling process: build the mount layout, then limits, Landlock, capabilities, seccomp; stdlib only."""

from __future__ import annotations

import os
import resource

# `signal` and `typing` would pull in enum and friends: the probe helper must start fast.
import _signal

import _layout
import _linux
import _seccomp

# Scratch mount point for the pivot: exists on every host, and the mount namespace is private by then.
_BASE = "/tmp"
_RO = _linux.MOUNT_ATTR_RDONLY | _linux.MOUNT_ATTR_NOSUID | _linux.MOUNT_ATTR_NODEV
# bwrap's --proc re-binds these read-only: writes there reach the host kernel even without capabilities.
_PROC_RO = ("sys", "sysrq-trigger", "irq", "bus")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def _mountpoint(target: str, like: str) -> None:
    if os.path.isdir(like):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _bind(source: str, target: str, attrs: int) -> None:
    _mountpoint(target, source)
    _linux.mount(source, target, None, _linux.MS_BIND | _linux.MS_REC)
    _linux.mount_setattr(target, attrs)


def _tmpfs(target: str, flags: int = _linux.MS_NOSUID | _linux.MS_NODEV) -> None:
    os.makedirs(target, exist_ok=True)
    _linux.mount("tmpfs", target, "tmpfs", flags, "mode=0755")


def _proc(target: str) -> None:
    os.makedirs(target, exist_ok=True)
    _linux.mount("proc", target, "proc", _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC)
    for name in _PROC_RO:
        path = f"{target}/{name}"
        if os.path.exists(path):
            _linux.mount(path, path, None, _linux.MS_BIND | _linux.MS_REC)
            _linux.mount_setattr(path, _RO)


def _dev(target: str) -> None:
    _tmpfs(target, _linux.MS_NOSUID | _linux.MS_NOEXEC)
    for name in _layout.DEVICES:
        if os.path.exists(f"/oldroot/dev/{name}"):
            _mountpoint(f"{target}/{name}", "/dev/null")
            _linux.mount(f"/oldroot/dev/{name}", f"{target}/{name}", None, _linux.MS_BIND)
    for name, dest in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                       ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(dest, f"{target}/{name}")
    os.mkdir(f"{target}/shm", 0o755)


def _apply(op: list[str]) -> None:
    kind, new = op[0], "/newroot" + op[-1]
    if kind == "ro":
        _bind("/oldroot" + op[1], new, _RO)
    elif kind == "rw":
        _bind("/oldroot" + op[1], new, _linux.MOUNT_ATTR_NOSUID | _linux.MOUNT_ATTR_NODEV)
    elif kind == "symlink":
        os.makedirs(os.path.dirname(new), exist_ok=True)
        os.symlink(op[1], new)
    elif kind == "tmpfs":
        _tmpfs(new)
    elif kind == "proc":
        _proc(new)
    elif kind == "dev":
        _dev(new)


def prepare_root(ops: list[list[str]]) -> None:
    """Mount a fresh tmpfs at /newroot holding the ops, with the host's tree still at /oldroot (bwrap's dance).

    Needs its own mount namespace, and a pid namespace of which this process is a member for /proc.
    """
    _linux.mount(None, "/", None, _linux.MS_REC | _linux.MS_PRIVATE)
    _tmpfs(_BASE)
    os.chdir(_BASE)
    os.mkdir("oldroot")
    _linux.pivot_root(".", "oldroot")
    _tmpfs("/newroot")
    for op in ops:
        _apply(op)


def finish_root(ops: list[list[str]]) -> None:
    """Add the run's own ops, drop the host tree, and make /newroot the root."""
    for op in ops:
        _apply(op)
    _linux.umount2("/oldroot", _linux.MNT_DETACH)
    os.chdir("/newroot")
    _linux.pivot_root(".", ".")
    _linux.umount2(".", _linux.MNT_DETACH)
    os.chdir("/")


def start_ruleset(steps: dict, root: str) -> _linux.Ruleset | None:
    """Landlock rules every run shares, for the tree at `root` ("/newroot" before the pivot, or the host's /)."""
    if not steps["landlock_abi"]:
        return None
    ruleset = _linux.Ruleset(steps["landlock_abi"], deny_tcp=not steps["allow_network"], scope=True)
    ruleset.allow(root, "read")
    prefix = root.rstrip("/")
    # Scratch dirs are writable only when private (in our mount layout); host /tmp must stay closed.
    for path in (*_layout.SCRATCH_DIRS, "/dev/shm") if steps["namespaces"] else ():
        if os.path.isdir(prefix + path):
            ruleset.allow(prefix + path, "write")
    for name in _layout.DEVICES:
        if os.path.exists(f"{prefix}/dev/{name}"):
            ruleset.allow(f"{prefix}/dev/{name}", "device")
    return ruleset


def confine_self(steps: dict, ruleset: _linux.Ruleset | None, record: Callable[[str], None]) -> None:
    """Apply the per-process steps in the only order that works; `record` is told each one that succeeded."""
    # Python ignores these; a command must start with the defaults, as subprocess's restore_signals does.
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(sig, _signal.SIG_DFL)
    _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
    record("no_new_privs")
    if ruleset is not None:
        ruleset.restrict()
        record("landlock")
    if steps["drop_caps"]:
        _linux.drop_capabilities()  # after the mounts, which need CAP_SYS_ADMIN in the namespace
        record("drop_caps")
    if steps["mdwe"]:
        _linux.set_mdwe()
        record("mdwe")
    # Late, so a small NOFILE or AS cannot starve the steps above.
    for name, value in steps["rlimits"].items():
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (value, value))
    record("rlimits")
    if steps["seccomp"]:
        _linux.seccomp_install(seccomp_program(steps["unix_sockets_only"]))  # last: it denies mount and more
        record("seccomp")


_programs: dict[bool, bytes] = {}


def seccomp_program(unix_sockets_only: bool) -> bytes:
    """The BPF program, built once per process (the zygote's children inherit it)."""
    if unix_sockets_only not in _programs:
        _programs[unix_sockets_only] = _seccomp.build(unix_sockets_only)
    return _programs[unix_sockets_only]
