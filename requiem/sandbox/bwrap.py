"""The bwrap backend: bubblewrap started by a plain spawn (vfork, no preexec_fn) with the layout, no caps, seccomp."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import tempfile

from requiem import json_text
from requiem.sandbox import _layout, _seccomp
from requiem.sandbox.base import Exit, LaunchSpec, SandboxReport
from requiem.sandbox.plan import bwrap_plan
from requiem.sandbox.proc import PidfdChild, become_subreaper, devnull, spawn, wait_readable

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

_PRLIMIT = {"CPU": "--cpu", "AS": "--as", "NOFILE": "--nofile", "FSIZE": "--fsize", "CORE": "--core",
            "NPROC": "--nproc"}
_OPS = {"ro": "--ro-bind", "rw": "--bind", "symlink": "--symlink", "tmpfs": "--tmpfs", "proc": "--proc",
        "dev": "--dev"}
_CLEAN_CAPS = "0000000000000000"


def _switches_uid(spec: LaunchSpec) -> bool:
    return bool(spec.run_as) and spec.run_as != (os.geteuid(), os.getegid())


def build_argv(tools: dict[str, str | None], spec: LaunchSpec, ops: list[list[str]], limits: dict[str, int],
               seccomp_fd: int | None, sync_fds: tuple[int, int] | None = None) -> list[str]:
    """[prlimit --] [setpriv --] bwrap <namespaces> <layout> -- command; the one place bwrap flags are chosen."""
    argv: list[str] = []
    if limits:  # rlimits without preexec_fn: prlimit sets them on itself, then execs the rest
        argv += [str(tools["prlimit"]), *(f"{_PRLIMIT[k]}={v}:{v}" for k, v in limits.items()), "--"]
    if _switches_uid(spec):
        uid, gid = spec.run_as  # type: ignore[misc]
        argv += [str(tools["setpriv"]), f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    # As uid 0, bwrap keeps every capability unless told to drop them (bubblewrap #561, #287).
    argv += [str(tools["bwrap"]), "--unshare-all", "--unshare-user", "--cap-drop", "ALL",
             "--die-with-parent", "--new-session"]
    if seccomp_fd is None:  # our filter already denies unshare and clone(CLONE_NEWUSER)
        argv.append("--disable-userns")
    if spec.allow_network:
        argv.append("--share-net")
    if spec.hostname:
        argv += ["--hostname", spec.hostname]
    for op in ops:
        argv += [_OPS[op[0]], *op[1:]]
    argv += ["--chdir", os.path.realpath(spec.cwd)]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if sync_fds is not None:
        argv += ["--info-fd", str(sync_fds[0]), "--block-fd", str(sync_fds[1])]
    # bwrap 0.8 has no --argv0: the command sees its path as argv[0].
    return [*argv, "--", spec.executable, *spec.argv[1:]]


def _seccomp_pipe(program: bytes) -> int:
    """A pipe holding the BPF program, read once by bwrap (a shared memfd offset would be spent after one run)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    os.write(w, program)
    os.close(w)
    return r


def canary(tools: dict[str, str | None]) -> dict[str, Any]:
    """Run `cat /proc/self/status` through launch(), as every run goes: it must exit 0 with no capabilities."""
    if not tools.get("bwrap"):
        return {"ok": False, "evidence": "bwrap not found on PATH"}
    cat = shutil.which("cat", path="/usr/bin:/bin") or "/bin/cat"
    workspace = tempfile.mkdtemp(prefix="requiem-canary-")
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    spec = LaunchSpec(cat, ["cat", "/proc/self/status"], {}, workspace, workspace, out_w, err_w)
    program = _seccomp.build(False) if _seccomp.supported() else None
    try:
        child = launch(tools, spec, {"CORE": 0}, program)
    except OSError as exc:
        child = None
        failure = f"bwrap could not start: {exc}"
    finally:
        os.close(out_w)
        os.close(err_w)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    shutil.rmtree(workspace, ignore_errors=True)
    if child is None:
        return {"ok": False, "evidence": f"{failure}; {stderr.strip()[-200:]}"}
    child.kill_tree()
    exit = child.wait(None)
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in stdout.splitlines())
              if k in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp")}
    ok = exit.exit_code == 0 and status.get("CapEff") == status.get("CapBnd") == _CLEAN_CAPS
    facts = " ".join(f"{k} {v}" for k, v in sorted(status.items()))
    lines = stderr.strip().splitlines()
    return {"ok": ok, "status": status, "evidence": f"exit {exit.exit_code} signal {exit.signal}; "
                                                    f"{facts or (lines[-1] if lines else 'no output')}"}


def _read_info(fd: int) -> int:
    """bwrap's init pid from --info-fd; EOF without it means bwrap failed (its message is on stderr)."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    try:
        return int(json_text.loads(b"".join(chunks).decode())["child-pid"])
    except (ValueError, KeyError) as exc:
        raise OSError(errno.EIO, "bwrap exited before creating the sandbox (see the command's stderr)") from exc


def _check_namespaces(init: int, spec: LaunchSpec) -> None:
    """Per-run proof, while bwrap waits on --block-fd, that its init really lives in fresh namespaces."""
    kinds = ["user", "mnt", "pid", "ipc", "uts"] + ([] if spec.allow_network else ["net"])
    shared = [k for k in kinds if os.readlink(f"/proc/{init}/ns/{k}") == os.readlink(f"/proc/self/ns/{k}")]
    if shared:
        raise OSError(errno.EIO, f"bwrap's sandbox shares namespaces with the engine: {', '.join(shared)}")


class BwrapChild(PidfdChild):
    """bwrap's own process; the command runs under bwrap's init, pid 1 of a fresh pid namespace."""

    def __init__(self, pid: int) -> None:
        super().__init__(pid)
        self.init: tuple[int, int] | None = None  # (pid, pidfd) of bwrap's init, once bwrap reports it

    def _exit_of(self, status: int, usage: object) -> Exit:
        # bwrap exits as soon as the command does; its init, which reaped the command, dies of
        # --die-with-parent a moment later (~0.3 ms), taking setsid escapees with it. Its pidfd turns
        # readable only once the pid namespace is empty; then, re-parented to us (a subreaper), it is
        # ours to reap, and its rusage is the command's (bwrap's own is not).
        if self.init is not None:
            pid, pidfd = self.init
            wait_readable(pidfd, 10)
            try:
                reaped, _, init_usage = os.wait4(pid, os.WNOHANG)
                usage = init_usage if reaped else usage
            except ChildProcessError:
                pass  # bwrap reaped it (we killed it first), and bwrap's rusage includes it
            os.close(pidfd)
            self.init = None
        exit = super()._exit_of(status, usage)
        # bwrap reports a command killed by signal N as exit 128+N, as shells do; unfold it so that
        # every backend reports a signal death the same way.
        if exit.exit_code is not None and 128 < exit.exit_code < 128 + signal.NSIG:
            return Exit(None, exit.exit_code - 128, exit.rusage)
        return exit

    def kill_tree(self) -> None:
        """Kill bwrap's init: its death empties the pid namespace, and bwrap exits after it."""
        if self.init is not None:
            try:
                signal.pidfd_send_signal(self.init[1], signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.wait(2) is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait(None)


def _check_runnable(tools: dict[str, str | None], spec: LaunchSpec, ops: list[list[str]]) -> None:
    """bwrap's own failures look like the command's exit 1: catch the predictable ones first."""
    for path in (spec.workspace, *spec.readonly_paths, spec.cwd):
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "no such path to bind or enter", path)
    for what, path in (("executable", spec.executable), ("cwd", spec.cwd)):
        if not _layout.visible(path, ops):
            raise FileNotFoundError(errno.ENOENT, f"{what} is not visible inside the sandbox "
                                                  f"(bind it with readonly_paths)", path)
    if not os.path.isfile(spec.executable):
        raise FileNotFoundError(errno.ENOENT, "no such executable", spec.executable)
    if not os.access(spec.executable, os.X_OK):
        raise PermissionError(errno.EACCES, "executable is not executable", spec.executable)
    if _switches_uid(spec) and (os.geteuid() != 0 or not tools.get("setpriv") or not tools.get("prlimit")):
        raise PermissionError(errno.EPERM, "run_as needs root, setpriv and prlimit", str(spec.run_as))


def launch(tools: dict[str, str | None], spec: LaunchSpec, limits: dict[str, int],
           program: bytes | None) -> BwrapChild:
    """Start bwrap; while it waits on --block-fd, set its init's rlimits and check its namespaces; release it."""
    become_subreaper()  # bwrap's init outlives bwrap briefly: it must come back to us, not to pid 1
    ops = _layout.layout(spec.workspace, spec.readonly_paths, spec.masked_paths)
    _check_runnable(tools, spec, ops)
    # We may prlimit bwrap's init ourselves (same uid) while it waits, which saves the exec of prlimit(1);
    # under run_as it is another uid and we lack CAP_SYS_RESOURCE, so prlimit(1) wraps bwrap instead.
    wrapped = limits if _switches_uid(spec) else {}
    seccomp_fd = None if program is None else _seccomp_pipe(program)
    info_r, info_w = os.pipe2(os.O_CLOEXEC)
    block_r, block_w = os.pipe2(os.O_CLOEXEC)
    passed = [info_w, block_r] + ([] if seccomp_fd is None else [seccomp_fd])
    try:
        argv = build_argv(tools, spec, ops, wrapped, seccomp_fd, (info_w, block_r))
        pid = spawn(argv, argv[0], stdin=devnull(), stdout=spec.stdout_fd, stderr=spec.stderr_fd,
                    cwd="/", env=spec.env, umask=spec.umask, keep_fds=tuple(passed))
    except BaseException:
        os.close(info_r)
        os.close(block_w)
        raise
    finally:
        for fd in passed:
            os.close(fd)
    child = BwrapChild(pid)
    try:
        init = _read_info(info_r)
        child.init = (init, os.pidfd_open(init))
        for name, value in ({} if wrapped else limits).items():
            resource.prlimit(init, getattr(resource, "RLIMIT_" + name), (value, value))
        _check_namespaces(init, spec)
        os.write(block_w, b"go")
    except BaseException:
        child.kill_tree()
        raise
    finally:
        os.close(info_r)
        os.close(block_w)
    return child


class BwrapBackend:
    """Runs each command under bwrap; the report comes from the probe's canary through the same argv builder."""

    name = "bwrap"

    def __init__(self, probe: dict[str, Any], reason: str = "") -> None:
        self._probe, self.reason = probe, reason
        self._tools = probe["tools"]
        self._program = _seccomp.build(False) if _seccomp.supported() else None

    def report(self, spec: LaunchSpec) -> SandboxReport:
        return bwrap_plan(self._probe, spec).report._replace(backend_reason=self.reason)

    def spawn(self, spec: LaunchSpec) -> BwrapChild:
        plan = bwrap_plan(self._probe, spec)
        return launch(self._tools, spec, plan.rlimits, self._program if plan.seccomp else None)

    def close(self) -> None:
        pass
