"""The zygote backend: the engine talks to one `python -I -S` helper that forks, confines and execs for it."""

# The engine never forks (its fork would copy all its memory, and preexec_fn is unsafe with threads): it
# sends each command over an AF_UNIX SOCK_SEQPACKET socketpair, with the stdout/stderr fds and the plan in a
# memfd passed by SCM_RIGHTS. A reader thread routes the helper's events to the children they belong to.

from __future__ import annotations

import array
import errno
import itertools
import json
import os
import signal
import socket
import subprocess
import threading

from requiem.sandbox import _layout
from requiem.sandbox.base import Exit, LaunchSpec, SandboxReport
from requiem.sandbox.plan import Plan, zygote_plan
from requiem.sandbox.proc import disown, helper_argv, own

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any


class ZygoteChild:
    """A command the zygote started; its events arrive through the backend's reader thread."""

    strays_possible = False  # kill_tree returns once the zygote reaped the whole tree

    def __init__(self, backend: "ZygoteBackend", run_id: int, own_pid_namespace: bool) -> None:
        self.pid = -1  # the run's monitor (the command itself may live in a pid namespace of its own)
        self.steps: list[list[Any]] = []
        self._backend, self._id = backend, run_id
        # In its own pid namespace a run ends whole: "reaped" follows "exit" unasked, as soon as the
        # init is gone; asking would only add a round trip.
        self._ends_whole = own_pid_namespace
        self._started, self._exited, self._reaped = threading.Event(), threading.Event(), threading.Event()
        self._failed: OSError | None = None
        self._exit: Exit | None = None

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event["ev"]
        if kind in ("started", "failed"):
            self.pid, self.steps = event["pid"], event["steps"]
            if kind == "failed":
                last = self.steps[-1][0] if self.steps else "none"
                name, err, text = next((s for s in self.steps if s[1] != 0),
                                       ["setup", errno.EIO, f"ended after step {last!r} without a report"])
                self._failed = OSError(err if err > 0 else errno.EIO, f"sandbox step {name!r} failed: {text}")
            self._started.set()
        elif kind == "exit":
            self._exit = Exit(event["code"], event["signal"], event["rusage"])
            self._exited.set()
        elif kind == "reaped":
            self._exited.set()
            self._reaped.set()

    def lost(self) -> None:
        """The zygote died: its death signal chain killed the command."""
        if self._exit is None:
            self._exit = Exit(None, signal.SIGKILL, {})
        self._failed = self._failed or OSError(errno.EPIPE, "the zygote died")
        for event in (self._started, self._exited, self._reaped):
            event.set()

    def wait_started(self) -> None:
        self._started.wait()
        if self._failed is not None:
            self._reaped.wait()
            raise self._failed

    def wait(self, timeout_s: float | None) -> Exit | None:
        """Wait up to timeout_s for the command to end; None if it is still running."""
        self._exited.wait(timeout_s)
        return self._exit

    def kill_tree(self) -> None:
        """Ask the zygote to kill the run's whole tree; returns once every process of it is reaped."""
        if self._ends_whole and self._exit is not None and self._reaped.wait(1):
            return
        if not self._reaped.is_set():
            try:
                self._backend.send({"op": "kill", "id": self._id})
            except OSError:
                pass  # the zygote is gone, and with it the run: the reader thread marks it lost
            self._reaped.wait()


class ZygoteBackend:
    """One zygote per engine process; safe to call spawn from many threads."""

    name = "zygote"

    def __init__(self, probe: dict[str, Any], reason: str = "") -> None:
        self._probe, self.reason = probe, reason
        self._ids = itertools.count(1)
        self._children: dict[int, ZygoteChild] = {}
        self._lock = threading.Lock()  # guards _children and _alive; the reader only ever takes this one
        self._send_lock = threading.Lock()  # a blocked send must never stall the reader
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # vfork path, no preexec_fn; a session of its own keeps terminal signals away from it.
            self._proc = subprocess.Popen(helper_argv("_zygote_main", "Zygote(int(sys.argv[1])).serve()",
                                                      str(theirs.fileno())),
                                          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, cwd="/", start_new_session=True)
        finally:
            theirs.close()
        own(self._proc.pid)
        self._alive = True
        self._reader = threading.Thread(target=self._read_events, name="requiem-zygote-reader", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        """False once closed, or once the zygote died."""
        return self._alive

    def report(self, spec: LaunchSpec) -> SandboxReport:
        return zygote_plan(self._probe, spec).report._replace(backend_reason=self.reason)

    def spawn(self, spec: LaunchSpec) -> ZygoteChild:
        plan = zygote_plan(self._probe, spec)
        child = ZygoteChild(self, next(self._ids), plan.namespaces)
        memfd = os.memfd_create("requiem-plan", os.MFD_CLOEXEC)
        try:
            os.write(memfd, json.dumps(self._message(spec, plan)).encode())
            with self._lock:
                if not self._alive:
                    raise OSError(errno.EPIPE, "the zygote is not running")
                self._children[child._id] = child
            try:
                with self._send_lock:
                    self._sock.sendmsg([json.dumps({"op": "spawn", "id": child._id}).encode()],
                                       [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                         array.array("i", [memfd, spec.stdout_fd, spec.stderr_fd]))])
            except OSError:
                with self._lock:
                    self._children.pop(child._id, None)
                raise
        finally:
            os.close(memfd)
        child.wait_started()
        missing = [s for s in plan.required_steps if [s, 0] not in [step[:2] for step in child.steps]]
        if missing:  # never run weaker than reported
            child.kill_tree()
            raise OSError(errno.EIO, f"sandbox steps not confirmed for this run: {', '.join(missing)}")
        return child

    @staticmethod
    def _message(spec: LaunchSpec, plan: Plan) -> dict[str, Any]:
        return {
            "spec": {"executable": spec.executable, "argv": spec.argv, "env": spec.env,
                     "cwd": os.path.realpath(spec.cwd), "umask": spec.umask, "hostname": spec.hostname,
                     "run_as": list(spec.run_as) if spec.run_as else None},
            "layout": _layout.run_layout(spec.workspace, spec.readonly_paths, spec.masked_paths),
            "steps": {"namespaces": plan.namespaces, "netns": plan.netns, "landlock_abi": plan.landlock_abi,
                      "workspace": os.path.realpath(spec.workspace), "allow_network": spec.allow_network,
                      "drop_caps": plan.drop_caps, "mdwe": plan.mdwe, "seccomp": plan.seccomp,
                      "unix_sockets_only": plan.unix_sockets_only, "rlimits": plan.rlimits},
        }

    def send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self._sock.send(json.dumps(message).encode())

    def _read_events(self) -> None:
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                break
            event = json.loads(data)
            with self._lock:
                child = self._children.get(event["id"])
                if event["ev"] == "reaped":
                    self._children.pop(event["id"], None)
            if child is not None:
                child.on_event(event)
        with self._lock:
            self._alive = False
            orphans, self._children = list(self._children.values()), {}
        for child in orphans:
            child.lost()
        self._proc.wait()
        disown(self._proc.pid)

    def close(self) -> None:
        """Closing our end makes the zygote kill whatever still runs and exit."""
        with self._lock:
            self._alive = False
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed before
        self._reader.join()
        self._sock.close()
