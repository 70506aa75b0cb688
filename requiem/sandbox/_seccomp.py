"""The seccomp deny-list program (classic BPF), shared by bwrap (--seccomp FD) and the zygote; stdlib only."""

from __future__ import annotations

import errno
import os
import struct

# ENOSYS is what a kernel without the syscall answers, so programs take their fallback path; it is also
# distinctive, because every denied syscall exists on the kernels we run on (the probe checks ptrace).
DENY_ERRNO = errno.ENOSYS

_ARCHES = {
    # audit arch, then syscall numbers (kernel tables for x86_64 and the asm-generic one of aarch64)
    "x86_64": (0xC000003E, {
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
        "add_key": 248, "request_key": 249, "keyctl": 250, "mount": 165, "umount2": 166,
        "pivot_root": 155, "chroot": 161, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "unshare": 272,
        "setns": 308, "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163,
        "name_to_handle_at": 303, "open_by_handle_at": 304, "iopl": 172, "ioperm": 173,
        "clone": 56, "clone3": 435, "socket": 41,
    }),
    "aarch64": (0xC00000B7, {
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
        "add_key": 217, "request_key": 218, "keyctl": 219, "mount": 40, "umount2": 39,
        "pivot_root": 41, "chroot": 51, "open_tree": 428, "move_mount": 429, "fsopen": 430,
        "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "unshare": 97,
        "setns": 268, "swapon": 224, "swapoff": 225, "reboot": 142, "acct": 89,
        "name_to_handle_at": 264, "open_by_handle_at": 265,
        "clone": 220, "clone3": 435, "socket": 198,
    }),
}
_ARCH = os.uname().machine
_SPECIAL = ("clone", "clone3", "socket")
DENIED = tuple(sorted(name for name in _ARCHES["x86_64"][1] if name not in _SPECIAL))

_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_X32_SYSCALL_BIT = 0x40000000
_CLONE_NEW_FLAGS = 0x7E020000  # every CLONE_NEW* namespace flag
_AF_UNIX = 1


def supported() -> bool:
    """Whether this architecture has a syscall table here (others get no filter, and say so)."""
    return _ARCH in _ARCHES


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build(unix_sockets_only: bool) -> bytes:
    """Kill foreign-arch calls, deny the list and namespace clones with DENY_ERRNO, optionally non-unix sockets."""
    audit_arch, nr = _ARCHES[_ARCH]
    deny = _RET_ERRNO | DENY_ERRNO
    prog = [_ins(_LD_W_ABS, 0, 0, 4), _ins(_JEQ_K, 1, 0, audit_arch), _ins(_RET_K, 0, 0, _RET_KILL_PROCESS),
            _ins(_LD_W_ABS, 0, 0, 0)]
    if _ARCH == "x86_64":
        prog += [_ins(_JGE_K, 0, 1, _X32_SYSCALL_BIT), _ins(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    for name in DENIED:
        if name in nr:
            prog += [_ins(_JEQ_K, 0, 1, nr[name]), _ins(_RET_K, 0, 0, deny)]
    # clone3 passes flags in memory BPF cannot read: ENOSYS makes libc fall back to clone, which we can check.
    prog += [_ins(_JEQ_K, 0, 1, nr["clone3"]), _ins(_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS)]
    prog += [_ins(_JEQ_K, 0, 4, nr["clone"]), _ins(_LD_W_ABS, 0, 0, 16),
             _ins(_JSET_K, 0, 1, _CLONE_NEW_FLAGS), _ins(_RET_K, 0, 0, deny), _ins(_RET_K, 0, 0, _RET_ALLOW)]
    if unix_sockets_only:
        prog += [_ins(_JEQ_K, 0, 3, nr["socket"]), _ins(_LD_W_ABS, 0, 0, 16),
                 _ins(_JEQ_K, 1, 0, _AF_UNIX), _ins(_RET_K, 0, 0, deny)]
    prog.append(_ins(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(prog)
