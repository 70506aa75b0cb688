"""Linux sandbox primitives over ctypes; stdlib only, because the zygote and probe helpers import it by bare name."""

from __future__ import annotations

import ctypes
import os
import struct

ARCH = os.uname().machine
# Syscalls glibc does not wrap; numbers from the kernel's syscall tables (landlock/mount_setattr are unified).
_NR = {
    "x86_64": {"seccomp": 317, "pivot_root": 155, "mount_setattr": 442,
               "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446},
    "aarch64": {"seccomp": 277, "pivot_root": 41, "mount_setattr": 442,
                "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446},
}.get(ARCH, {})

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x20000, 0x4000000, 0x8000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER = 1, 4, 24, 36
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 47, 4
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 1, 2, 4
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000

LANDLOCK_FS = {
    "EXECUTE": 1 << 0, "WRITE_FILE": 1 << 1, "READ_FILE": 1 << 2, "READ_DIR": 1 << 3,
    "REMOVE_DIR": 1 << 4, "REMOVE_FILE": 1 << 5, "MAKE_CHAR": 1 << 6, "MAKE_DIR": 1 << 7,
    "MAKE_REG": 1 << 8, "MAKE_SOCK": 1 << 9, "MAKE_FIFO": 1 << 10, "MAKE_BLOCK": 1 << 11,
    "MAKE_SYM": 1 << 12, "REFER": 1 << 13, "TRUNCATE": 1 << 14, "IOCTL_DEV": 1 << 15,
}
_LL_NET_BIND_TCP, _LL_NET_CONNECT_TCP = 1, 2
_LL_SCOPE_ABSTRACT_UNIX, _LL_SCOPE_SIGNAL = 1, 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def _syscall(name: str, *args: object) -> int:
    if name not in _NR:
        raise OSError(38, f"{name}: no syscall number for {ARCH}")
    cargs = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return _check(_libc.syscall(ctypes.c_long(_NR[name]), *cargs), name)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def write_id_maps(inside_uid: int, outside_uid: int, inside_gid: int, outside_gid: int) -> None:
    """Map one uid and one gid into a fresh user namespace ("deny" setgroups first, as unprivileged needs)."""
    for path, text in (("/proc/self/setgroups", "deny"),
                       ("/proc/self/uid_map", f"{inside_uid} {outside_uid} 1\n"),
                       ("/proc/self/gid_map", f"{inside_gid} {outside_gid} 1\n")):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), target.encode(), enc(fstype), flags, enc(data)), f"mount {target}")


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount2 {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    _syscall("pivot_root", ctypes.c_char_p(new_root.encode()), ctypes.c_char_p(put_old.encode()))


def mount_setattr(path: str, attr_set: int) -> None:
    """Set mount flags (read-only, nosuid, nodev) on a mount and every mount below it."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", attr_set, 0, 0, 0), 32)
    _syscall("mount_setattr", _AT_FDCWD, ctypes.c_char_p(path.encode()), _AT_RECURSIVE, attr, 32)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_last_cap: list[int] = []


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets, so exec cannot regain any."""
    if not _last_cap:
        with open("/proc/sys/kernel/cap_last_cap") as handle:
            _last_cap.append(int(handle.read()))
    for cap in range(_last_cap[0] + 1):
        prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version; OSError (ENOSYS, EOPNOTSUPP) when Landlock is absent or off."""
    return _syscall("landlock_create_ruleset", None, 0, 1)


class Ruleset:
    """A Landlock ruleset built up rule by rule (possibly in another process) and enforced at the end."""

    def __init__(self, abi: int, deny_tcp: bool, scope: bool) -> None:
        handled = (1 << 13) - 1
        if abi >= 2:
            handled |= LANDLOCK_FS["REFER"]
        if abi >= 3:
            handled |= LANDLOCK_FS["TRUNCATE"]
        if abi >= 5:
            handled |= LANDLOCK_FS["IOCTL_DEV"]
        net = _LL_NET_BIND_TCP | _LL_NET_CONNECT_TCP if deny_tcp and abi >= 4 else 0
        scoped = _LL_SCOPE_ABSTRACT_UNIX | _LL_SCOPE_SIGNAL if scope and abi >= 6 else 0
        attr = (struct.pack("QQQ", handled, net, scoped) if abi >= 6
                else struct.pack("QQ", handled, net) if abi >= 4 else struct.pack("Q", handled))
        fs = LANDLOCK_FS
        self._access = {
            "read": fs["EXECUTE"] | fs["READ_FILE"] | fs["READ_DIR"],
            "write": handled,
            # Device files take file rights only; /dev/null is opened with O_TRUNC by every shell.
            "device": (fs["READ_FILE"] | fs["WRITE_FILE"] | fs["TRUNCATE"] | fs["IOCTL_DEV"]) & handled,
        }
        self.fd = _syscall("landlock_create_ruleset", ctypes.create_string_buffer(attr, len(attr)), len(attr), 0)

    def allow(self, path: str, kind: str) -> None:
        """Grant `kind` ("read", "write" or "device") beneath path."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = ctypes.create_string_buffer(struct.pack("=Qi", self._access[kind], fd), 12)
            _syscall("landlock_add_rule", self.fd, 1, rule, 0)  # LANDLOCK_RULE_PATH_BENEATH
        finally:
            os.close(fd)

    def restrict(self) -> None:
        """Enforce on this process and all it execs (no_new_privs or CAP_SYS_ADMIN required)."""
        _syscall("landlock_restrict_self", self.fd, 0)
        os.close(self.fd)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_install(program: bytes) -> None:
    """Load a classic-BPF seccomp filter on this process (no_new_privs must already be set)."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _syscall("seccomp", 1, 0, ctypes.byref(fprog))  # SECCOMP_SET_MODE_FILTER, no flags


def set_mdwe() -> None:
    """Refuse memory that is both writable and executable, for this process and what it execs."""
    prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)
