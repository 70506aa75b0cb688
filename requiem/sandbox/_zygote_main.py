"""The zygote: a small `python -I -S` process that forks, confines and execs commands for the engine.

Per run it forks a monitor (A). With namespaces, A unshares user/mount/pid/ipc/uts(/net) and forks the
namespace's init (B), which builds the mount layout and forks the command (C); killing B kills the whole
pid namespace. Without namespaces A is a subreaper and the init itself. C applies the per-process steps
and execs. Every step is recorded on a CLOEXEC pipe, so the engine learns what really held for this run.
"""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _confine  # noqa: E402
import _linux  # noqa: E402

_NS_FLAGS = (_linux.CLONE_NEWUSER | _linux.CLONE_NEWNS | _linux.CLONE_NEWPID
             | _linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS)
_MAX_FD = 1 << 20


class _Steps:
    """Writes one line per setup step to the setup pipe: `name\\t0` or `name\\terrno\\tmessage`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def ok(self, name: str) -> None:
        os.write(self.fd, f"{name}\t0\n".encode())

    def failed(self, name: str, exc: BaseException) -> None:
        err = exc.errno if isinstance(exc, OSError) and exc.errno else 0
        text = str(exc).replace("\n", " ").replace("\t", " ")[:300]
        os.write(self.fd, f"{name}\t{err or -1}\t{type(exc).__name__}: {text}\n".encode())

    def run(self, name: str, fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except BaseException as exc:
            self.failed(name, exc)
            os._exit(126)
        self.ok(name)


def _keep_only(fds: list[int]) -> None:
    """Close every fd except these (the zygote's socket and other runs' pipes must not leak into a run)."""
    low = 0
    for fd in sorted(set(fds)):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)


def _exit_record(status: int, usage) -> str:  # type: ignore[no-untyped-def]
    return json.dumps({"code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                       "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                       "rusage": {"cpu_user_s": round(usage.ru_utime, 6), "cpu_sys_s": round(usage.ru_stime, 6),
                                  "max_rss_kib": float(usage.ru_maxrss)}}) + "\n"


def _command(plan: dict, fds: dict, steps: _Steps) -> None:
    """Role C: the command itself; confines itself and execs."""
    spec = plan["spec"]
    os.setsid()
    for target, fd in ((0, fds["null"]), (1, fds["out"]), (2, fds["err"])):
        os.dup2(fd, target)
    steps.run("cwd", os.chdir, spec["cwd"])
    os.umask(spec["umask"])
    try:
        _confine.confine_self(plan["steps"], steps.ok)
    except BaseException as exc:
        steps.failed("confine", exc)
        os._exit(126)
    os.closerange(3, steps.fd)
    os.closerange(steps.fd + 1, _MAX_FD)
    steps.ok("exec")
    try:
        os.execve(spec["executable"], spec["argv"], spec["env"])
    except BaseException as exc:
        steps.failed("exec", exc)
    os._exit(127)


def _init(plan: dict, fds: dict, steps: _Steps, pid_one: bool) -> None:
    """Role B (or A without namespaces): fork the command, reap everything, report the command's status."""
    child = os.fork()
    if child == 0:
        _command(plan, fds, steps)
    for fd in (fds["out"], fds["err"], steps.fd):
        os.close(fd)
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            os.write(fds["status"], _exit_record(status, usage).encode())
            if pid_one:
                os._exit(0)  # the kernel now kills whatever is left in the pid namespace


def _arm_pdeathsig(parent: int) -> None:
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        raise ProcessLookupError(3, "the zygote died before the parent-death signal was armed")


def _monitor(plan: dict, fds: dict, steps: _Steps, zygote: int) -> None:
    """Role A: a per-run process in the host pid namespace that owns the run's namespaces."""
    _keep_only([*fds.values(), steps.fd])
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setsid()
    spec, uid, gid = plan["spec"], os.geteuid(), os.getegid()
    if spec["run_as"]:
        uid, gid = spec["run_as"]
        steps.run("run_as", _become, uid, gid)
    if not plan["steps"]["namespaces"]:
        # Armed after the credential change, which would clear it.
        steps.run("pdeathsig", _arm_pdeathsig, zygote)
        steps.run("subreaper", _linux.prctl, _linux.PR_SET_CHILD_SUBREAPER, 1)
        _init(plan, fds, steps, pid_one=False)
    flags = _NS_FLAGS | (_linux.CLONE_NEWNET if plan["steps"]["netns"] else 0)
    steps.run("namespaces", _linux.unshare, flags)
    steps.run("id_maps", _linux.write_id_maps, uid, uid, gid, gid)
    steps.run("pdeathsig", _arm_pdeathsig, zygote)
    init = os.fork()
    if init == 0:
        steps.run("pdeathsig_init", _linux.prctl, _linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        if spec["hostname"]:
            steps.run("hostname", _linux.sethostname, spec["hostname"])
        steps.run("mounts", _confine.build_root, plan["layout"])
        _init(plan, fds, steps, pid_one=True)
    for fd in (fds["out"], fds["err"], steps.fd, fds["status"]):
        os.close(fd)
    os.waitpid(init, 0)
    os._exit(0)


def _become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


class _Run:
    """The zygote's view of one run."""

    def __init__(self, run_id: int, pid: int, setup_r: int, status_r: int) -> None:
        self.id, self.pid = run_id, pid
        self.setup_r, self.status_r = setup_r, status_r
        self.setup, self.status = b"", b""
        self.started = False
        self.exit_sent = False
        self.killing = False


class Zygote:
    """The event loop: requests from the engine, setup/status pipes of runs, SIGCHLD."""

    def __init__(self, sock_fd: int) -> None:
        self.sock = socket.socket(fileno=sock_fd)
        self.null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poll = select.poll()
        self.poll.register(self.sock.fileno(), select.POLLIN)
        self.poll.register(self.wake_r, select.POLLIN)
        self.runs: dict[int, _Run] = {}  # by run id
        self.by_pid: dict[int, _Run] = {}  # by monitor pid
        self.by_fd: dict[int, _Run] = {}

    def send(self, run_id: int, event: str, **data: object) -> None:
        try:
            self.sock.send(json.dumps({"id": run_id, "ev": event, **data}).encode())
        except OSError:
            pass  # the engine is gone; the EOF on the socket ends the loop

    def serve(self) -> None:
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)  # escapees of a dead monitor come here, not to init
        while True:
            killing = any(run.killing for run in self.runs.values())
            for fd, _ in self.poll.poll(1 if killing else None):
                if fd == self.sock.fileno():
                    if not self.request():
                        return self.shutdown()
                elif fd == self.wake_r:
                    while True:
                        try:
                            os.read(self.wake_r, 512)
                        except BlockingIOError:
                            break
                    self.reap()
                elif fd in self.by_fd:
                    self.pipe_readable(fd)
            for run in list(self.runs.values()):
                if run.killing:
                    self.kill_pass(run)

    def request(self) -> bool:
        try:
            msg, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(3 * 4))
        except OSError:
            return False
        if not msg:
            return False
        fds = array.array("i")
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        req = json.loads(msg)
        if req["op"] == "spawn":
            self.spawn(req["id"], list(fds))
        elif req["op"] == "kill":
            run = self.runs.get(req["id"])
            if run is None:
                self.send(req["id"], "reaped")
            else:
                run.killing = True
                self.kill_pass(run)
        return True

    def spawn(self, run_id: int, fds: list[int]) -> None:
        plan_fd, out, err = fds
        plan = json.loads(os.pread(plan_fd, os.fstat(plan_fd).st_size, 0))
        os.close(plan_fd)
        setup_r, setup_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                _monitor(plan, {"out": out, "err": err, "status": status_w, "null": self.null},
                         _Steps(setup_w), me)
            finally:
                os._exit(126)
        for fd in (out, err, setup_w, status_w):
            os.close(fd)
        run = _Run(run_id, pid, setup_r, status_r)
        self.runs[run_id] = self.by_pid[pid] = run
        for fd in (setup_r, status_r):
            os.set_blocking(fd, False)
            self.by_fd[fd] = run
            self.poll.register(fd, select.POLLIN)

    def pipe_readable(self, fd: int) -> bool:
        """Take what the pipe holds; False once nothing more is to be had now."""
        run = self.by_fd[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if fd == run.setup_r:
            run.setup += data
            if not data:
                self.close_pipe(fd)
                self.setup_done(run)
        else:
            run.status += data
            if not data:
                self.close_pipe(fd)
            elif run.status.endswith(b"\n") and not run.exit_sent:
                run.exit_sent = True
                self.send(run.id, "exit", **json.loads(run.status))
        return bool(data)

    def close_pipe(self, fd: int) -> None:
        self.poll.unregister(fd)
        del self.by_fd[fd]
        os.close(fd)

    def setup_done(self, run: _Run) -> None:
        records = [line.split("\t", 2) for line in run.setup.decode(errors="replace").splitlines()]
        steps = [[r[0], int(r[1]), r[2] if len(r) > 2 else ""] for r in records]
        if steps and steps[-1][0] == "exec" and steps[-1][1] == 0:
            run.started = True
            self.send(run.id, "started", pid=run.pid, steps=steps)
        else:
            self.send(run.id, "failed", pid=run.pid, steps=steps)

    def reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.by_pid.pop(pid, None)
            if run is None:
                continue  # an escapee whose monitor died before it; it is dead now
            del self.runs[run.id]
            for fd in (run.setup_r, run.status_r):
                while fd in self.by_fd and self.pipe_readable(fd):
                    pass
                if fd in self.by_fd:  # a writer outlived the monitor (killed mid-setup): stop listening
                    self.close_pipe(fd)
                    if fd == run.setup_r:
                        self.setup_done(run)
            if run.started and not run.exit_sent:
                # The init died before the command reported: only a SIGKILL (ours, or the
                # kernel's pid-namespace teardown) gets there.
                run.exit_sent = True
                self.send(run.id, "exit", code=None, signal=signal.SIGKILL,
                          rusage=json.loads(_exit_record(status, usage))["rusage"])
            self.send(run.id, "reaped")

    def kill_pass(self, run: _Run) -> None:
        """SIGKILL every descendant of the run's monitor, then the monitor once nothing is left under it."""
        victims = _descendants(run.pid)
        for pid in victims:
            _kill(pid)
        if not victims:
            _kill(run.pid)
            run.killing = False

    def shutdown(self) -> None:
        for run in list(self.runs.values()):
            run.killing = True
        while self.runs:
            for run in list(self.runs.values()):
                if run.killing:
                    self.kill_pass(run)
            self.poll.poll(1)
            self.reap()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as handle:
                kids = [int(p) for p in handle.read().split()]
        except OSError:
            kids = []
        found += kids
        stack += kids
    return found


if __name__ == "__main__":
    Zygote(int(sys.argv[1])).serve()
