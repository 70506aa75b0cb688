"""The zygote: a small `python -I -S` process that forks, confines and execs commands for the engine."""

# With namespaces, each run has a monitor A (host pid namespace; unshares user+pid+mount), whose child B is
# pid 1 of the run: it unshares ipc/uts(/net), mounts the shared part of the layout, starts the Landlock
# ruleset and forks C, which waits for the request; then C adds the run's mounts, pivots, confines itself
# and execs. A, B and C are prepared ahead ("warm"), so a request only pays for its own part. Killing B
# ends the whole pid namespace. Without namespaces A is a subreaper and forks C itself. Every step is
# recorded on a CLOEXEC pipe, so the engine learns what really held for this run.

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket

import _confine
import _layout
import _linux

_MAX_FD = 1 << 20
# Written on the status pipe by the monitor once no process of the run is left (before it tears down the
# run's mounts in its own exit, which takes milliseconds nobody needs to wait for).
_GONE = "gone"
# Also on the status pipe, from the monitor: the init's host pid, whose pidfd tells the zygote the moment
# the pid namespace is empty, without waiting for the monitor to notice.
_INIT = "init "
_FDS = socket.CMSG_SPACE(3 * 4)


class _Steps:
    """Writes one line per setup step to the setup pipe: `name\\t0` or `name\\terrno\\tmessage`."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def ok(self, name: str) -> None:
        os.write(self.fd, f"{name}\t0\n".encode())

    def failed(self, name: str, exc: BaseException) -> None:
        err = exc.errno if isinstance(exc, OSError) and exc.errno else -1
        text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("\t", " ")[:300]
        os.write(self.fd, f"{name}\t{err}\t{text}\n".encode())

    def run(self, name: str, fn, *args):  # type: ignore[no-untyped-def]
        """Run one step; on failure record it and end this process (a run never goes on weaker)."""
        try:
            result = fn(*args)
        except BaseException as exc:
            self.failed(name, exc)
            os._exit(126)
        self.ok(name)
        return result


def _keep_only(fds: list[int]) -> None:
    """Close every fd except these (the zygote's socket and other runs' pipes must not leak into a run)."""
    low = 0
    for fd in sorted(set(fds)):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)


def _receive(sock: socket.socket) -> tuple[bytes, list[int]]:
    msg, anc, _, _ = sock.recvmsg(4096, _FDS)
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


def _read_plan(fd: int) -> dict:
    plan = json.loads(os.pread(fd, os.fstat(fd).st_size, 0))
    os.close(fd)
    return plan


def _rusage(usage) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {"cpu_user_s": round(usage.ru_utime, 6), "cpu_sys_s": round(usage.ru_stime, 6),
            "max_rss_kib": float(usage.ru_maxrss)}


def _exit_record(status: int, usage) -> str:  # type: ignore[no-untyped-def]
    return json.dumps({"code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                       "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                       "rusage": _rusage(usage)}) + "\n"


def _arm_pdeathsig(parent: int) -> None:
    _linux.prctl(_linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent and os.getppid() != parent:
        raise ProcessLookupError(3, "the parent died before the parent-death signal was armed")


def _become(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # The uid change made us undumpable, which gives /proc/self to root: we could not write our id maps.
    _linux.prctl(_linux.PR_SET_DUMPABLE, 1)


def _command(plan: dict, io: tuple[int, int, int], steps: _Steps, ruleset: _linux.Ruleset | None) -> None:
    """Role C: the command itself; confines itself and execs."""
    spec = plan["spec"]
    os.setsid()
    for target, fd in enumerate(io):
        os.dup2(fd, target)
    steps.run("cwd", os.chdir, spec["cwd"])
    os.umask(spec["umask"])
    try:
        _confine.confine_self(plan["steps"], ruleset, steps.ok)
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


def _reap(child: int, status: int, pid_one: bool) -> None:
    """Reap everything, report the command's status; B, or A without namespaces."""
    while True:
        try:
            pid, code, usage = os.wait4(-1, 0)
        except ChildProcessError:
            os.write(status, f"{_GONE}\n".encode())
            os._exit(0)
        if pid == child:
            os.write(status, _exit_record(code, usage).encode())
            if pid_one:
                os._exit(0)  # the kernel now kills whatever is left in the pid namespace


def _flat(plan: dict, io: tuple[int, int, int], steps: _Steps, status: int, zygote: int) -> None:
    """Role A without namespaces: a subreaper that is the run's init."""
    if plan["spec"]["run_as"]:
        steps.run("run_as", _become, *plan["spec"]["run_as"])
    steps.run("pdeathsig", _arm_pdeathsig, zygote)  # after the credential change, which would clear it
    steps.run("subreaper", _linux.prctl, _linux.PR_SET_CHILD_SUBREAPER, 1)
    ruleset = steps.run("landlock_rules", _confine.start_ruleset, plan["steps"], "/")
    if ruleset is not None:
        steps.run("landlock_workspace", ruleset.allow, plan["steps"]["workspace"], "write")
    child = os.fork()
    if child == 0:
        os.close(status)
        _command(plan, io, steps, ruleset)
    for fd in (io[1], io[2], steps.fd):
        os.close(fd)
    _reap(child, status, pid_one=False)


def _warm(shape: dict, ctl: socket.socket, steps: _Steps, status: int, null: int, zygote: int) -> None:
    """Role A with namespaces: owns the run's user, pid and mount namespaces from the host side."""
    uid, gid = os.geteuid(), os.getegid()
    if shape["run_as"]:
        uid, gid = shape["run_as"]
        steps.run("run_as", _become, uid, gid)
    # The monitor joins the mount namespace too: holding it, the init dies without unmounting everything.
    steps.run("userns", _linux.unshare, _linux.CLONE_NEWUSER | _linux.CLONE_NEWPID | _linux.CLONE_NEWNS)
    steps.run("id_maps", _linux.write_id_maps, uid, uid, gid, gid)
    steps.run("pdeathsig", _arm_pdeathsig, zygote)
    init = os.fork()
    if init == 0:
        _pid_one(shape, ctl, steps, status, null)
    os.write(status, f"{_INIT}{init}\n".encode())
    ctl.close()
    os.close(steps.fd)
    os.waitpid(init, 0)  # the init's death empties the pid namespace
    os.write(status, f"{_GONE}\n".encode())
    os._exit(0)


def _pid_one(shape: dict, ctl: socket.socket, steps: _Steps, status: int, null: int) -> None:
    """Role B: pid 1 of the run; prepares what every run shares, forks the waiting command, reaps."""
    steps.run("pdeathsig_init", _arm_pdeathsig, 0)
    flags = _linux.CLONE_NEWIPC | _linux.CLONE_NEWUTS | (_linux.CLONE_NEWNET if shape["netns"] else 0)
    steps.run("namespaces", _linux.unshare, flags)
    steps.run("base_mounts", _confine.prepare_root, _layout.base_layout())
    ruleset = steps.run("landlock_rules", _confine.start_ruleset, shape, "/newroot")
    child = os.fork()
    if child == 0:
        os.close(status)
        _waiting(ctl, steps, null, ruleset)
    ctl.close()
    os.close(steps.fd)
    _reap(child, status, pid_one=True)


def _waiting(ctl: socket.socket, steps: _Steps, null: int, ruleset: _linux.Ruleset | None) -> None:
    """Role C, warm: wait for the request, add the run's mounts (we still hold the namespace's capabilities)."""
    try:
        msg, fds = _receive(ctl)
    except OSError:
        msg = b""
    if not msg:
        os._exit(0)  # the zygote let this warm run go unused
    plan = steps.run("request", _read_plan, fds[0])
    ctl.close()
    if plan["spec"]["hostname"]:
        steps.run("hostname", _linux.sethostname, plan["spec"]["hostname"])
    steps.run("mounts", _confine.finish_root, plan["layout"])
    if ruleset is not None:
        steps.run("landlock_workspace", ruleset.allow, plan["steps"]["workspace"], "write")
    _command(plan, (null, fds[1], fds[2]), steps, ruleset)


class _Run:
    """The zygote's view of one run (or of a warm one, before a request takes it)."""

    def __init__(self, pid: int, setup_r: int, status_r: int, ctl: socket.socket | None, shape: str) -> None:
        self.id: int | None = None  # None while warm
        self.pid, self.setup_r, self.status_r, self.ctl, self.shape = pid, setup_r, status_r, ctl, shape
        self.init_fd = -1  # pidfd of the init (pid 1 of the run's namespace), once known
        self.setup, self.status = b"", b""
        self.setup_closed = self.started = self.exit_sent = self.killing = self.finished = False


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
        self.by_pid: dict[int, _Run] = {}  # by monitor pid, warm ones included
        self.by_fd: dict[int, _Run] = {}
        self.warm: _Run | None = None

    def send(self, run_id: int | None, event: str, **data: object) -> None:
        try:
            self.sock.send(json.dumps({"id": run_id, "ev": event, **data}).encode())
        except OSError:
            pass  # the engine is gone; the EOF on the socket ends the loop

    def serve(self) -> None:
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)  # escapees of a dead monitor come here, not to init
        while True:
            killing = any(run.killing for run in self.by_pid.values())
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
            for run in list(self.by_pid.values()):
                if run.killing:
                    self.kill_pass(run)

    def request(self) -> bool:
        try:
            msg, fds = _receive(self.sock)
        except OSError:
            return False
        if not msg:
            return False
        req = json.loads(msg)
        if req["op"] == "spawn":
            self.spawn(req["id"], fds)
        elif req["op"] == "kill":
            run = self.runs.get(req["id"])
            if run is None:
                self.send(req["id"], "reaped")
            else:
                run.killing = True
                self.kill_pass(run)
        return True

    def fork_run(self, body, keep: list[int], shape: str) -> _Run:  # type: ignore[no-untyped-def]
        """Fork a monitor that runs body(steps, status, zygote_pid) with its own setup and status pipes."""
        setup_r, setup_w = os.pipe2(os.O_CLOEXEC)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            try:
                _keep_only([setup_w, status_w, self.null, *keep])
                for low in (0, 1, 2):  # occupied, so no later fd (a Landlock ruleset) lands where C dup2s
                    os.dup2(self.null, low)
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.setsid()
                body(_Steps(setup_w), status_w, me)
            except BaseException as exc:
                _Steps(setup_w).failed("monitor", exc)
            finally:
                os._exit(126)
        for fd in (setup_w, status_w):
            os.close(fd)
        run = _Run(pid, setup_r, status_r, None, shape)
        self.by_pid[pid] = run
        for fd in (setup_r, status_r):
            os.set_blocking(fd, False)
            self.by_fd[fd] = run
            self.poll.register(fd, select.POLLIN)
        return run

    def prepare(self, shape: str) -> _Run:
        """Start a warm run for this shape: A and B set up as far as they can without the request."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        run = self.fork_run(lambda steps, status, me: _warm(json.loads(shape), theirs, steps, status, self.null, me),
                            [theirs.fileno()], shape)
        theirs.close()
        run.ctl = mine
        return run

    def spawn(self, run_id: int, fds: list[int]) -> None:
        plan_fd, out, err = fds
        plan = json.loads(os.pread(plan_fd, os.fstat(plan_fd).st_size, 0))
        if not plan["steps"]["namespaces"]:
            os.close(plan_fd)
            io = (self.null, out, err)
            run = self.fork_run(lambda steps, status, me: _flat(plan, io, steps, status, me), [out, err], "")
        else:
            steps = plan["steps"]
            shape = json.dumps({"run_as": plan["spec"]["run_as"], "netns": steps["netns"],
                                "landlock_abi": steps["landlock_abi"], "allow_network": steps["allow_network"],
                                "namespaces": True}, sort_keys=True)
            run, self.warm = self.warm, None
            if run is None or run.shape != shape or run.setup_closed:
                self.discard(run)
                run = self.prepare(shape)
            try:
                run.ctl.sendmsg([b"run"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            except OSError:
                pass  # B already failed: its records on the setup pipe say why
            run.ctl.close()
            run.ctl = None
            os.close(plan_fd)
        for fd in (out, err):
            os.close(fd)
        run.id = run_id
        self.runs[run_id] = run
        if run.setup_closed:
            self.setup_done(run)

    def discard(self, run: _Run | None) -> None:
        """Let a warm run go: on EOF its init exits, and the monitor after it."""
        if run is not None and run.ctl is not None:
            run.ctl.close()
            run.ctl = None

    def pipe_readable(self, fd: int) -> bool:
        """Take what the pipe holds; False once nothing more is to be had now."""
        run = self.by_fd[fd]
        if fd == run.init_fd:
            # Ask again: an event from this poll batch may be for an fd closed since, whose number this
            # pidfd now has (pipes are safe: their reads just find nothing).
            again = select.poll()
            again.register(fd, select.POLLIN)
            if not again.poll(0):
                return False
            self.close_pipe(fd)  # the init is dead, and with it every process of the run
            self.finish(run, {})
            return False
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return False
        if fd == run.setup_r:
            run.setup += data
            if not data:
                self.close_pipe(fd)
                run.setup_closed = True
                if run.id is not None:
                    self.setup_done(run)
        else:
            run.status += data
            if not data:
                self.close_pipe(fd)
            *lines, rest = run.status.split(b"\n")
            run.status = rest
            for line in lines:
                text = line.decode()
                if text == _GONE:
                    self.finish(run, {})
                elif text.startswith(_INIT):
                    self.watch_init(run, int(text[len(_INIT):]))
                elif not run.exit_sent:
                    run.exit_sent = True
                    self.send(run.id, "exit", **json.loads(line))
        return bool(data)

    def watch_init(self, run: _Run, pid: int) -> None:
        try:
            run.init_fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return  # already gone: the monitor's "gone" follows
        os.set_inheritable(run.init_fd, False)
        self.by_fd[run.init_fd] = run
        self.poll.register(run.init_fd, select.POLLIN)

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
            if run.shape and self.warm is None:
                self.warm = self.prepare(run.shape)  # while the command runs, not in the next request's way
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
            if run is self.warm:
                self.warm = None
            self.discard(run)
            self.finish(run, _rusage(usage))
            for fd in (run.setup_r, run.status_r, run.init_fd):
                # Identity, not number: a closed fd's number may already serve a newer run.
                if self.by_fd.get(fd) is run:  # a writer outlived the monitor (killed mid-setup)
                    self.close_pipe(fd)

    def finish(self, run: _Run, rusage: dict) -> None:
        """No process of the run is left: say so once, after the events that must come first."""
        if run.id is None or run.finished:
            return
        run.finished = True
        del self.runs[run.id]
        for fd in (run.setup_r, run.status_r):  # what was written before the end comes first
            while self.by_fd.get(fd) is run and self.pipe_readable(fd):
                pass
        if not run.setup_closed:
            run.setup_closed = True
            self.setup_done(run)
        if run.started and not run.exit_sent:
            # The init died before the command reported: only a SIGKILL (ours, or the
            # kernel's pid-namespace teardown) gets there.
            run.exit_sent = True
            self.send(run.id, "exit", code=None, signal=signal.SIGKILL, rusage=rusage)
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
        for run in self.by_pid.values():
            run.killing = True
        while self.by_pid:
            for run in list(self.by_pid.values()):
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

