"""Running real commands through a sandbox backend the way the runner does, for the sandbox tests."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from requiem.errors import RequiemError
from requiem.sandbox import Backend, Exit, LaunchSpec, select_backend

# The command inside the sandbox is the system python: /root (and the venv under it) is mode 700,
# and the sandbox shows only /usr, /etc and the workspace anyway.
SYSTEM_PYTHON = "/usr/bin/python3"
ATTACK = Path(__file__).with_name("attack.py")
NOBODY = (65534, 65534)


@dataclass
class Result:
    exit: Exit
    stdout: str
    stderr: str
    seconds: float
    found: dict[str, Any] = field(default_factory=dict)


def backend_or_skip(name: str) -> Backend:
    try:
        return select_backend(name)
    except RequiemError as exc:
        print(f"SKIP: {exc.message}")
        pytest.skip(f"{name} unavailable here: {exc.message}")


def shared_workspace() -> Path:
    """A workspace every uid can reach and write (pytest's tmp_path sits below a mode-700 dir)."""
    base = Path(tempfile.mkdtemp(prefix="requiem-sbx-", dir="/tmp"))
    base.chmod(0o755)
    ws = base / "ws"
    ws.mkdir()
    ws.chmod(0o777)
    return ws


def remove(ws: Path) -> None:
    shutil.rmtree(ws.parent, ignore_errors=True)


def spec_for(ws: Path, argv: list[str], out: int, err: int, executable: str = SYSTEM_PYTHON,
             cwd: str | None = None, **kw: Any) -> LaunchSpec:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "LANG": "C.UTF-8"}
    return LaunchSpec(executable, argv, env, cwd or str(ws), str(ws), out, err, **kw)


def run(backend: Backend, ws: Path, argv: list[str], timeout: float = 30, **kw: Any) -> Result:
    """Spawn, drain stdout/stderr to EOF, wait, always kill_tree: the runner's sequence."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    started = time.monotonic()
    try:
        child = backend.spawn(spec_for(ws, argv, out_w, err_w, **kw))
    finally:
        os.close(out_w)
        os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    sel = selectors.DefaultSelector()
    for fd in chunks:
        sel.register(fd, selectors.EVENT_READ)
    deadline = started + timeout
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            data = os.read(key.fd, 65536)
            if data:
                chunks[key.fd].append(data)
            else:
                sel.unregister(key.fd)
    exit = child.wait(max(0.0, deadline - time.monotonic()))
    child.kill_tree()
    exit = exit or child.wait(None)
    for fd in chunks:
        os.close(fd)
    stdout = b"".join(chunks[out_r]).decode(errors="replace")
    result = Result(exit, stdout, b"".join(chunks[err_r]).decode(errors="replace"), time.monotonic() - started)
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if lines:
        result.found = json.loads(lines[-1])
    return result


def attack(backend: Backend, ws: Path, action: str, *args: object, **kw: Any) -> Result:
    """Run tests/sandbox_helpers/attack.py ACTION inside the sandbox (copied into the workspace)."""
    script = ws / "attack.py"
    shutil.copyfile(ATTACK, script)
    script.chmod(0o644)
    return run(backend, ws, ["python3", str(script), action, *map(str, args)], **kw)


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line carries the marker (escapee detection from outside any pid namespace)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if marker.encode() in handle.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def wait_for(predicate: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


class Listeners:
    """TCP, UDP, abstract and pathname unix listeners in the test process; record whatever reaches them."""

    def __init__(self, sock_dir: Path) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.abstract_name = f"requiem-test-{uuid.uuid4().hex}"
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen()
        self.path = str(sock_dir / "host.sock")
        self.pathname = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.pathname.bind(self.path)
        os.chmod(self.path, 0o777)
        self.pathname.listen()
        self.received: list[str] = []

    def args(self) -> tuple[object, ...]:
        return self.tcp.getsockname()[1], self.udp.getsockname()[1], self.abstract_name, self.path

    def drain(self) -> list[str]:
        for name, sock in (("tcp", self.tcp), ("abstract", self.abstract), ("pathname", self.pathname),
                           ("udp", self.udp)):
            sock.setblocking(False)
            try:
                if name == "udp":
                    sock.recv(64)
                else:
                    sock.accept()
                self.received.append(name)
            except BlockingIOError:
                pass
        return self.received

    def close(self) -> None:
        for sock in (self.tcp, self.udp, self.abstract, self.pathname):
            sock.close()
        os.unlink(self.path)
