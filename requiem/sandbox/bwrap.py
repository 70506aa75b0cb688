"""The bwrap backend: bubblewrap started by a plain Popen (vfork, no preexec_fn) with the layout, no caps, seccomp."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from typing import Any

from requiem.sandbox import _layout, _seccomp
from requiem.sandbox.base import Exit, LaunchSpec, SandboxReport
from requiem.sandbox.plan import bwrap_plan
from requiem.sandbox.proc import PidfdChild, children_of, wait_readable

_PRLIMIT = {"CPU": "--cpu", "AS": "--as", "NOFILE": "--nofile", "FSIZE": "--fsize", "CORE": "--core",
            "NPROC": "--nproc"}
_OPS = {"ro": "--ro-bind", "rw": "--bind", "symlink": "--symlink", "tmpfs": "--tmpfs", "proc": "--proc",
        "dev": "--dev", "remount_ro": "--remount-ro"}
_CLEAN_CAPS = "0000000000000000"


def build_argv(tools: dict[str, str | None], spec: LaunchSpec, limits: dict[str, int], seccomp_fd: int | None,
               sync_fds: tuple[int, int] | None = None) -> list[str]:
    """[prlimit --] [setpriv --] bwrap <namespaces> <layout> -- command; the one place bwrap flags are chosen."""
    argv: list[str] = []
    if limits:  # rlimits without preexec_fn: prlimit sets them on itself, then execs the rest
        argv += [str(tools["prlimit"]), *(f"{_PRLIMIT[k]}={v}:{v}" for k, v in limits.items()), "--"]
    if spec.run_as and spec.run_as != (os.geteuid(), os.getegid()):
        uid, gid = spec.run_as
        argv += [str(tools["setpriv"]), f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    # As uid 0, bwrap keeps every capability unless told to drop them (bubblewrap #561, #287).
    argv += [str(tools["bwrap"]), "--unshare-all", "--unshare-user", "--cap-drop", "ALL",
             "--die-with-parent", "--new-session", "--disable-userns"]
    if spec.allow_network:
        argv.append("--share-net")
    if spec.hostname:
        argv += ["--hostname", spec.hostname]
    for op in _layout.layout(spec.workspace, spec.readonly_paths):
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
    """Run `cat /proc/self/status` through build_argv: bwrap must exit 0 with no capabilities left."""
    if not tools.get("bwrap"):
        return {"ok": False, "evidence": "bwrap not found on PATH"}
    cat = shutil.which("cat", path="/usr/bin:/bin") or "/bin/cat"
    workspace = tempfile.mkdtemp(prefix="requiem-canary-")
    seccomp_fd = _seccomp_pipe(_seccomp.build(False)) if _seccomp.supported() else None
    spec = LaunchSpec(cat, ["cat", "/proc/self/status"], {}, workspace, workspace, 1, 2)
    limits = {"CORE": 0} if tools.get("prlimit") else {}
    try:
        done = subprocess.run(build_argv(tools, spec, limits, seccomp_fd), capture_output=True, timeout=10,
                              pass_fds=() if seccomp_fd is None else (seccomp_fd,), cwd="/", env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "evidence": f"bwrap canary could not run: {exc}"}
    finally:
        if seccomp_fd is not None:
            os.close(seccomp_fd)
        shutil.rmtree(workspace, ignore_errors=True)
    status = {k: v.strip() for k, _, v in (line.partition(":") for line in done.stdout.decode().splitlines())
              if k in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp")}
    ok = done.returncode == 0 and status.get("CapEff") == status.get("CapBnd") == _CLEAN_CAPS
    facts = " ".join(f"{k} {v}" for k, v in sorted(status.items()))
    stderr = done.stderr.decode(errors="replace").strip().splitlines()
    return {"ok": ok, "status": status,
            "evidence": f"exit {done.returncode}; {facts or (stderr[-1] if stderr else 'no output')}"}


def _read_info(fd: int) -> int:
    """bwrap's init pid from --info-fd; EOF without it means bwrap failed (its message is on stderr)."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    try:
        return int(json.loads(b"".join(chunks))["child-pid"])
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

    def _decode(self, status: int, rusage: dict[str, float]) -> Exit:
        exit = super()._decode(status, rusage)
        # bwrap reports a command killed by signal N as exit 128+N, as shells do; unfold it so that
        # every backend reports a signal death the same way.
        if exit.exit_code is not None and 128 < exit.exit_code < 128 + signal.NSIG:
            return Exit(None, exit.exit_code - 128, rusage)
        return exit

    def kill_tree(self) -> None:
        if self._exit is None:
            # Kill the namespace's init: its death takes down every process in the namespace (setsid
            # escapees included) before its pidfd turns readable, and bwrap then reaps it and exits.
            # Killing bwrap first would orphan the init instead.
            inits = []
            for init in children_of(self.pid):
                try:
                    inits.append(os.pidfd_open(init))
                    os.kill(init, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            for fd in inits:
                wait_readable(fd, 10)
                os.close(fd)
            if not inits or self.wait(1) is None:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.wait(None)


class BwrapBackend:
    """Runs each command under bwrap; the report comes from the probe's canary through the same argv builder."""

    name = "bwrap"

    def __init__(self, probe: dict[str, Any], reason: str = "") -> None:
        self._probe, self.reason = probe, reason
        self._tools = probe["tools"]
        self._program = _seccomp.build(False) if _seccomp.supported() else b""

    def report(self, spec: LaunchSpec) -> SandboxReport:
        return dataclasses.replace(bwrap_plan(self._probe, spec).report, backend_reason=self.reason)

    def spawn(self, spec: LaunchSpec) -> BwrapChild:
        plan = bwrap_plan(self._probe, spec)
        self._check_runnable(spec)
        # As root we may prlimit bwrap's init ourselves (same uid) while it waits on --block-fd, which
        # saves the exec of prlimit(1); under run_as it is another uid, so prlimit(1) wraps bwrap instead.
        wrapped = plan.rlimits if spec.run_as else {}
        seccomp_fd = _seccomp_pipe(self._program) if plan.seccomp else None
        info_r, info_w = os.pipe2(os.O_CLOEXEC)
        block_r, block_w = os.pipe2(os.O_CLOEXEC)
        passed = [info_w, block_r] + ([] if seccomp_fd is None else [seccomp_fd])
        try:
            popen = subprocess.Popen(
                build_argv(self._tools, spec, wrapped, seccomp_fd, (info_w, block_r)),
                stdin=subprocess.DEVNULL, stdout=spec.stdout_fd, stderr=spec.stderr_fd, env=spec.env,
                cwd="/", umask=spec.umask, close_fds=True, start_new_session=True, pass_fds=passed)
        finally:
            for fd in passed:
                os.close(fd)
        child = BwrapChild(popen)
        try:
            init = _read_info(info_r)
            if not spec.run_as:
                for name, value in plan.rlimits.items():
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

    def _check_runnable(self, spec: LaunchSpec) -> None:
        """bwrap's own failures look like the command's exit 1: catch the predictable ones first."""
        ops = _layout.layout(spec.workspace, spec.readonly_paths)
        for what, path in (("executable", spec.executable), ("cwd", spec.cwd)):
            if not _layout.visible(path, ops):
                raise FileNotFoundError(errno.ENOENT, f"{what} is not visible inside the sandbox "
                                                      f"(bind it with readonly_paths)", path)
        if not os.access(spec.executable, os.X_OK):
            raise PermissionError(errno.EACCES, "executable is not executable", spec.executable)
        if spec.run_as and spec.run_as != (os.geteuid(), os.getegid()):
            if os.geteuid() != 0 or not self._tools.get("setpriv"):
                raise PermissionError(errno.EPERM, "run_as needs root and setpriv", str(spec.run_as))

    def close(self) -> None:
        pass
