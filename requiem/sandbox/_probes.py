"""Real attempts at each sandbox primitive, each in a throwaway child of an isolated `python -I -S`."""

# main() prints one Python literal, a list of {primitive: {"ok", "evidence", "errno"}} dicts. The evidence
# is the errno an escape attempt got (or why the primitive could not be set up at all).

from __future__ import annotations

import ctypes
import errno
import os
import time

import _signal  # not `signal`, `shutil`, `tempfile`: their imports would double this helper's start-up

import _confine
import _layout
import _linux
import _seccomp

_PTRACE_TRACEME = 0


def _result(ok: bool, evidence: str, err: int | None = None) -> dict:
    return {"ok": ok, "evidence": evidence, "errno": err}


def _failed(what: str, exc: BaseException) -> dict:
    err = getattr(exc, "errno", None)
    if err:
        return _result(False, f"{what}: {errno.errorcode.get(err, err)} ({os.strerror(err)})", err)
    return _result(False, f"{what}: {type(exc).__name__} ({exc})", None)


def _expect_errno(what: str, fn, *expected: int) -> dict:  # type: ignore[no-untyped-def]
    """Run an escape attempt that must fail with one of `expected`."""
    try:
        fn()
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return _result(exc.errno in expected, f"{what}: {name}", exc.errno)
    return _result(False, f"{what}: ALLOWED")


def _status(*keys: str) -> dict[str, str]:
    with open("/proc/self/status") as handle:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in handle) if k in keys}


def _userns_netns(port: int) -> dict:
    uid, gid = os.geteuid(), os.getegid()
    try:
        _linux.unshare(_linux.CLONE_NEWUSER | _linux.CLONE_NEWNET)
        _linux.write_id_maps(uid, uid, gid, gid)
    except OSError as exc:
        return {"userns": _failed("unshare(NEWUSER|NEWNET)", exc), "netns": _failed("unshare", exc)}
    import _socket

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    netns = _expect_errno("connect to a host loopback listener", lambda: sock.connect(("127.0.0.1", port)),
                          errno.ENETUNREACH, errno.ECONNREFUSED, errno.EHOSTUNREACH)
    return {"userns": _result(True, f"unshare(NEWUSER) and uid_map '{uid} {uid} 1'"), "netns": netns}


def _mount_pid_caps(workspace: str) -> dict | str:
    """The zygote's real path: namespaces, pid 1, build_root, then escapes before and after the cap drop."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        _linux.unshare(_linux.CLONE_NEWUSER | _linux.CLONE_NEWPID | _linux.CLONE_NEWNS)
        _linux.write_id_maps(uid, uid, gid, gid)
    except OSError as exc:
        fail = _failed("unshare(NEWUSER|NEWPID|NEWNS)", exc)
        return {"mountns": fail, "pidns": fail, "caps_ns": fail}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _signal.alarm(5)
        out = {}
        try:
            out["pidns"] = _result(os.getpid() == 1, f"first child's pid in the new namespace: {os.getpid()}")
            _linux.unshare(_linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS)
            _confine.prepare_root(_layout.base_layout())
            _confine.finish_root(_layout.run_layout(workspace))
            with open(os.path.join(workspace, "probe"), "w") as handle:
                handle.write("ok")
            etc = _expect_errno("write /etc under the read-only layout", lambda: open("/etc/requiem-probe", "w"),
                                errno.EROFS, errno.EACCES)
            _linux.drop_capabilities()
            caps = _status("CapEff", "CapBnd")
            out["caps_ns"] = _result(set(caps.values()) == {"0000000000000000"},
                                     f"after drop: CapEff {caps.get('CapEff')} CapBnd {caps.get('CapBnd')}")
            remount = _expect_errno("remount / read-write without capabilities",
                                    lambda: _linux.mount(None, "/", None, _linux.MS_REMOUNT | _linux.MS_BIND),
                                    errno.EPERM)
            out["mountns"] = _result(etc["ok"] and remount["ok"], f"{etc['evidence']}; {remount['evidence']}")
        except BaseException as exc:
            out.setdefault("mountns", _failed("build the mount layout", exc))
            out.setdefault("caps_ns", _failed("drop capabilities", exc))
        os.write(w, repr(out).encode())
        os._exit(0)
    os.close(w)
    data = _read_all(r)
    os.waitpid(pid, 0)
    return data or {"mountns": _result(False, "probe child died")}


def _landlock(workspace: str, outside: str) -> dict:
    try:
        abi = _linux.landlock_abi()
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        ruleset = _linux.Ruleset(abi, deny_tcp=False, scope=False)
        ruleset.allow("/", "read")
        ruleset.allow(workspace, "write")
        ruleset.restrict()
    except OSError as exc:
        return {"landlock": _failed("landlock_create_ruleset/restrict_self", exc)}
    res = _expect_errno("create a file outside the allowed dir", lambda: open(outside, "w"), errno.EACCES)
    res["abi"] = abi
    return {"landlock": res}


def _seccomp_nnp() -> dict:
    if not _seccomp.supported():
        return {"seccomp": _result(False, f"no syscall table for {os.uname().machine}")}
    try:
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        _linux.seccomp_install(_seccomp.build(unix_sockets_only=False))
    except OSError as exc:
        return {"seccomp": _failed("seccomp(SET_MODE_FILTER)", exc)}
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.ptrace(_PTRACE_TRACEME, 0, None, None)
    err = ctypes.get_errno() if rc != 0 else 0
    status = _status("NoNewPrivs", "Seccomp")
    return {
        "seccomp": _result(rc != 0 and err == _seccomp.DENY_ERRNO and status.get("Seccomp") == "2",
                           f"ptrace(TRACEME) under the filter: {errno.errorcode.get(err, err)}; "
                           f"Seccomp {status.get('Seccomp')}", err),
        "nnp": _result(status.get("NoNewPrivs") == "1", f"NoNewPrivs {status.get('NoNewPrivs')}"),
    }


def _caps_flat() -> dict:
    try:
        _linux.drop_capabilities()
    except OSError as exc:
        return {"caps_flat": _failed("drop capabilities", exc)}
    caps = _status("CapEff", "CapBnd")
    return {"caps_flat": _result(set(caps.values()) == {"0000000000000000"},
                                 f"after drop: CapEff {caps.get('CapEff')} CapBnd {caps.get('CapBnd')}")}


def _mdwe() -> dict:
    try:
        _linux.set_mdwe()
    except OSError as exc:
        return {"mdwe": _failed("prctl(PR_SET_MDWE)", exc)}
    import mmap

    return {"mdwe": _expect_errno("mmap(PROT_WRITE|PROT_EXEC) under MDWE",
                                  lambda: mmap.mmap(-1, 4096, prot=7), errno.EACCES)}


def _rlimits() -> dict:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (8, 8))
    return {"rlimits": _expect_errno("open 16 files under NOFILE=8",
                                     lambda: [os.open("/dev/null", os.O_RDONLY) for _ in range(16)], errno.EMFILE)}


def _subreaper() -> dict:
    try:
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
    except OSError as exc:
        return {"subreaper": _failed("prctl(PR_SET_CHILD_SUBREAPER)", exc)}
    return {"subreaper": _result(True, "prctl(PR_SET_CHILD_SUBREAPER) accepted")}


def _read_all(fd: int) -> str:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks).decode()


def main() -> None:
    import _socket

    scratch = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"requiem-probe-{os.getpid()}-{time.time_ns()}")
    workspace, outside = os.path.join(scratch, "ws"), os.path.join(scratch, "outside")
    os.mkdir(scratch, 0o700)  # fails rather than follows if the name exists
    os.mkdir(workspace)
    listener = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    probes = [lambda: _userns_netns(listener.getsockname()[1]), lambda: _mount_pid_caps(workspace),
              lambda: _landlock(workspace, outside), _seccomp_nnp, _caps_flat, _mdwe, _rlimits, _subreaper]
    children = []
    for probe in probes:  # in parallel: together they cost about as much as the slowest
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _signal.alarm(5)
            try:
                out = probe()
            except BaseException as exc:
                out = {"probe_error": _failed(getattr(probe, "__name__", "probe"), exc)}
            os.write(w, (out if isinstance(out, str) else repr(out)).encode())
            os._exit(0)
        os.close(w)
        children.append((pid, r))
    texts = []
    for pid, r in children:
        texts.append(_read_all(r) or "{}")
        os.waitpid(pid, 0)
    for path in (os.path.join(workspace, "probe"), outside):
        if os.path.exists(path):
            os.unlink(path)
    os.rmdir(workspace)
    os.rmdir(scratch)
    print("[" + ", ".join(texts) + "]")

