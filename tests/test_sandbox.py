"""Escape tests: every capability a backend reports as enforced is attacked from inside, for real."""

# Each test runs for every available backend (bwrap, zygote), as root and with the command under uid 65534,
# and first asks the backend's report: a capability it does not claim is skipped (with the reason), one it
# claims must hold, judged by the kernel's answer inside and by the host's state outside.

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "sandbox_helpers"))

import harness  # noqa: E402

from requiem.sandbox import Rlimits  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(harness.SYSTEM_PYTHON),
                                reason=f"{harness.SYSTEM_PYTHON} runs the attacks inside the sandbox")

DENIED = {"EROFS", "EACCES", "EPERM", "ENOENT", "EXDEV", "ENOSYS"}


class Sandbox:
    """One backend, run as root or as nobody."""

    def __init__(self, name: str, run_as: tuple[int, int] | None) -> None:
        self.name, self.run_as = name, run_as
        self.backend = harness.backend_or_skip(name)
        if run_as and os.geteuid() != 0:
            pytest.skip("running the command as another uid needs root")

    def claims(self, capability: str, ws: Path, **kw: object) -> None:
        """Skip unless the report for this run says enforced: only claims are tested here."""
        report = self.backend.report(harness.spec_for(ws, ["x"], 1, 2, run_as=self.run_as, **kw))
        if capability not in report.enforced:
            reason = f"{self.name} does not claim {capability}: {report.state(capability)}, " \
                     f"{report.reasons.get(capability)}"
            print(f"SKIP: {reason}")
            pytest.skip(reason)

    def attack(self, ws: Path, action: str, *args: object, **kw: object) -> harness.Result:
        return harness.attack(self.backend, ws, action, *args, run_as=self.run_as, **kw)


@pytest.fixture(params=[("bwrap", None), ("bwrap", harness.NOBODY), ("zygote", None), ("zygote", harness.NOBODY)],
                ids=["bwrap-root", "bwrap-nobody", "zygote-root", "zygote-nobody"])
def sandbox(request: pytest.FixtureRequest) -> Sandbox:
    return Sandbox(*request.param)


@pytest.fixture
def ws() -> Path:
    path = harness.shared_workspace()
    yield path
    harness.remove(path)


@pytest.fixture
def outside(ws: Path) -> Path:
    """A host directory beside the workspace with one file in it, writable by anyone on the host."""
    path = ws.parent / "outside"
    path.mkdir()
    path.chmod(0o777)
    (path / "existing.txt").write_text("original")
    (path / "existing.txt").chmod(0o666)
    return path


def test_workspace_confinement(sandbox: Sandbox, ws: Path, outside: Path) -> None:
    sandbox.claims("workspace_confinement", ws, readonly_paths=(str(outside),))
    home = Path.home()
    before_home = set(os.listdir(home))
    res = sandbox.attack(ws, "fs", ws, outside, home, readonly_paths=(str(outside),))
    found = res.found
    assert found["write_workspace"] == "ALLOWED", res.stderr
    for name in ("create_outside", "append_outside", "truncate_outside", "unlink_outside",
                 "rename_out_of_workspace", "symlink_outside", "hardlink_outside", "write_etc", "write_usr",
                 "write_home"):
        assert found[name] in DENIED, (name, found[name])
    # The host is the judge: nothing outside the workspace changed; the workspace write landed.
    assert sorted(os.listdir(outside)) == ["existing.txt"]
    assert (outside / "existing.txt").read_text() == "original"
    assert not (ws.parent / "beside.txt").exists()
    assert not Path("/etc/requiem-escape").exists() and not Path("/usr/requiem-escape").exists()
    assert not Path("/tmp/requiem-private").exists()
    assert set(os.listdir(home)) == before_home
    assert (ws / "inside.txt").read_text() == "escape"


def test_remount_read_write_fails(sandbox: Sandbox, ws: Path, outside: Path) -> None:
    """The trap seen here: root in a user namespace keeping its capabilities remounts / and writes the host."""
    sandbox.claims("workspace_confinement", ws, readonly_paths=(str(outside),))
    res = sandbox.attack(ws, "remount", outside, readonly_paths=(str(outside),))
    for name in ("remount_root_rw", "remount_usr_rw", "remount_outside_rw", "umount_outside",
                 "write_usr_after", "write_outside_after"):
        assert res.found[name] in DENIED, (name, res.found[name])
    assert not Path("/usr/requiem-escape").exists()
    assert sorted(os.listdir(outside)) == ["existing.txt"]


def test_network_isolation(sandbox: Sandbox, ws: Path) -> None:
    sandbox.claims("network_isolation", ws)
    listeners = harness.Listeners(ws.parent)  # /tmp/...: a pathname socket where host sockets usually live
    try:
        res = sandbox.attack(ws, "net", *listeners.args())
        time.sleep(0.2)  # let any datagram that did get out arrive
        assert listeners.drain() == [], res.found
    finally:
        listeners.close()
    for name in ("tcp_loopback", "abstract_unix", "pathname_unix"):
        assert res.found[name] != "ALLOWED", (name, res.found)
    assert res.found.get("if_names", ["lo"]) == ["lo"]


def test_process_status(sandbox: Sandbox, ws: Path) -> None:
    sandbox.claims("no_new_privs", ws)
    res = sandbox.attack(ws, "status")
    found = res.found
    assert found["NoNewPrivs"] == "1"
    assert found["Uid"] == str(sandbox.run_as[0] if sandbox.run_as else os.geteuid())
    report = sandbox.backend.report(harness.spec_for(ws, ["x"], 1, 2, run_as=sandbox.run_as))
    if "seccomp_bpf" in report.enforced:
        assert found["Seccomp"] == "2"
    if report.state("process_mitigations") != "unsupported":
        assert found["CapEff"] == found["CapBnd"] == found["CapPrm"] == "0000000000000000"


def test_seccomp_denies_with_distinctive_errno(sandbox: Sandbox, ws: Path) -> None:
    sandbox.claims("seccomp_bpf", ws)
    res = sandbox.attack(ws, "seccomp")
    for name in ("ptrace_traceme", "io_uring_setup", "unshare_user", "raw_ptrace"):
        assert res.found[name] == "ENOSYS", (name, res.found)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the i386 side door exists on x86_64 only")
def test_seccomp_kills_foreign_arch(sandbox: Sandbox, ws: Path) -> None:
    sandbox.claims("seccomp_bpf", ws)
    res = sandbox.attack(ws, "int80")
    assert res.exit.signal == signal.SIGSYS, (res.exit, res.stdout, res.stderr)


def test_supervisor_out_of_reach(sandbox: Sandbox, ws: Path) -> None:
    sandbox.claims("process_isolation", ws)
    hits: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: hits.append(1))
    try:
        res = sandbox.attack(ws, "supervisor", os.getpid())
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert hits == []
    for name in ("kill_0", "kill_usr1", "ptrace_attach", "read_environ"):
        assert res.found[name] != "ALLOWED", (name, res.found)


@pytest.mark.parametrize("then", ["hang", "exit"])
def test_setsid_double_fork_escapee_killed(sandbox: Sandbox, ws: Path, then: str) -> None:
    sandbox.claims("process_isolation", ws)
    marker = f"{os.getpid() % 1000 + 1000}.{uuid.uuid4().int % 10**9}"  # a valid, unique sleep duration
    script = ws / "attack.py"
    script.write_bytes(harness.ATTACK.read_bytes())
    out_r, out_w = os.pipe()
    child = sandbox.backend.spawn(harness.spec_for(ws, ["python3", str(script), "escapee", marker, then],
                                                   out_w, out_w, run_as=sandbox.run_as))
    os.close(out_w)
    try:
        if then == "hang":
            assert harness.wait_for(lambda: len(harness.processes_with(marker)) >= 2), "escapee never started"
            assert child.wait(0.05) is None
        else:
            child.wait(30)
    finally:
        child.kill_tree()
        os.close(out_r)
    assert harness.processes_with(marker) == []


def test_rlimit_cpu(sandbox: Sandbox, ws: Path) -> None:
    limits = Rlimits(cpu_seconds=1)
    report = sandbox.backend.report(harness.spec_for(ws, ["x"], 1, 2, run_as=sandbox.run_as, rlimits=limits))
    if report.state("rlimits") == "unsupported":
        pytest.skip(f"rlimits unsupported: {report.reasons['rlimits']}")
    res = sandbox.attack(ws, "limits", "cpu", rlimits=limits, timeout=20)
    assert res.exit.signal in (signal.SIGKILL, signal.SIGXCPU), res.exit
    assert res.seconds < 10


@pytest.mark.parametrize("kind,limits,attempt,expected", [
    ("as", Rlimits(address_space_bytes=256 << 20), "allocate_512MiB", "MemoryError"),
    ("fsize", Rlimits(file_size_bytes=1 << 20), "write_2MiB", "EFBIG"),
    ("nofile", Rlimits(open_files=32), "open_100", "EMFILE"),
])
def test_rlimits(sandbox: Sandbox, ws: Path, kind: str, limits: Rlimits, attempt: str, expected: str) -> None:
    report = sandbox.backend.report(harness.spec_for(ws, ["x"], 1, 2, run_as=sandbox.run_as, rlimits=limits))
    if report.state("rlimits") == "unsupported":
        pytest.skip(f"rlimits unsupported: {report.reasons['rlimits']}")
    res = sandbox.attack(ws, "limits", kind, rlimits=limits)
    assert res.found[attempt] == expected, (res.found, res.stderr)


def test_rlimit_core_zero(sandbox: Sandbox, ws: Path) -> None:
    res = sandbox.attack(ws, "limits", "core")
    assert res.found["core"] == [0, 0]


def test_fork_bomb_under_nproc(sandbox: Sandbox, ws: Path) -> None:
    limits = Rlimits(processes=12)
    report = sandbox.backend.report(harness.spec_for(ws, ["x"], 1, 2, run_as=sandbox.run_as, rlimits=limits))
    if not sandbox.run_as:
        # Not an escape test to skip silently: the report must own up to the hole.
        assert report.state("rlimits") == "partial" and "NPROC" in report.reasons["rlimits"]
        pytest.skip("RLIMIT_NPROC does not bind uid 0; the report says partial")
    # RLIMIT_NPROC counts every process of the uid on the host: bomb as a uid nothing else uses, so that
    # neither this count nor other tests' runs as nobody are disturbed.
    sandbox.run_as = (65533, 65533)
    sandbox.claims("rlimits", ws, rlimits=limits)
    res = sandbox.attack(ws, "limits", "nproc", rlimits=limits)
    assert res.found["fork_60"] == "EAGAIN", res.found
    assert res.found["forked"] < 12


def test_mdwe(sandbox: Sandbox, ws: Path) -> None:
    report = sandbox.backend.report(harness.spec_for(ws, ["x"], 1, 2, run_as=sandbox.run_as, mdwe=True))
    if report.state("process_mitigations") != "enforced" or "MDWE on" not in report.reasons["process_mitigations"]:
        print(f"SKIP: {report.reasons['process_mitigations']}")
        pytest.skip(report.reasons["process_mitigations"])
    res = sandbox.attack(ws, "mdwe", mdwe=True)
    assert res.found["rwx_mmap"] == "EACCES"


def test_exit_codes_and_signals(sandbox: Sandbox, ws: Path) -> None:
    res = harness.run(sandbox.backend, ws, ["sh", "-c", "echo out; echo err >&2; exit 3"], executable="/bin/sh",
                      run_as=sandbox.run_as)
    assert (res.exit.exit_code, res.exit.signal, res.stdout, res.stderr) == (3, None, "out\n", "err\n")
    res = harness.run(sandbox.backend, ws, ["sh", "-c", "kill -SEGV $$"], executable="/bin/sh",
                      run_as=sandbox.run_as)
    assert (res.exit.exit_code, res.exit.signal) == (None, signal.SIGSEGV)
    assert set(res.exit.rusage) == {"cpu_user_s", "cpu_sys_s", "max_rss_kib"}


def test_rusage_is_the_commands(sandbox: Sandbox, ws: Path) -> None:
    """Not the sandbox helper's: bwrap's own rusage would say a few MiB and no CPU."""
    code = "x = bytearray(120 << 20)\nfor i in range(2 * 10**6): pass"
    res = harness.run(sandbox.backend, ws, ["python3", "-c", code], run_as=sandbox.run_as)
    assert res.exit.exit_code == 0, res.stderr
    assert res.exit.rusage["max_rss_kib"] > 120 << 10
    assert res.exit.rusage["cpu_user_s"] + res.exit.rusage["cpu_sys_s"] > 0.02


@pytest.mark.parametrize("missing", ["executable", "cwd", "workspace"])
def test_spawn_fails_rather_than_exit_1(sandbox: Sandbox, ws: Path, missing: str) -> None:
    """bwrap's own failures would read as the command's exit 1: they must raise from spawn instead."""
    kw = {"executable": str(ws / "nope")} if missing == "executable" else {"executable": "/bin/true"}
    if missing == "cwd":
        kw["cwd"] = str(ws / "nope")
    target = ws / "gone" if missing == "workspace" else ws
    with pytest.raises(OSError) as info:
        harness.run(sandbox.backend, target, ["true"], run_as=sandbox.run_as, **kw)
    assert info.value.errno == errno.ENOENT, info.value


def test_concurrent_spawns_from_threads(sandbox: Sandbox, ws: Path) -> None:
    outputs: dict[int, str] = {}

    def worker(n: int) -> None:
        for i in range(3):
            res = harness.run(sandbox.backend, ws, ["sh", "-c", f"echo {n}-{i}"], executable="/bin/sh",
                              run_as=sandbox.run_as)
            outputs[n * 10 + i] = res.stdout.strip()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outputs == {n * 10 + i: f"{n}-{i}" for n in range(6) for i in range(3)}


def test_a_tool_on_a_path_that_is_not_utf8_keeps_the_probe_cache_working(tmp_path: Path) -> None:
    import shutil

    from tests.conftest import run_cli

    prlimit = shutil.which("prlimit")
    if prlimit is None:
        pytest.skip("prlimit is not installed")
    tools = tmp_path / os.fsdecode(b"bin\xff")  # a byte no UTF-8 decoder accepts
    tools.mkdir()
    (tools / "prlimit").symlink_to(prlimit)
    request = tmp_path / "r.json"
    request.write_text(json.dumps({"command": "true", "workspace_root": str(tmp_path)}))
    env = {"PATH": f"{tools}:{os.environ['PATH']}"}
    for _ in range(2):  # the first run probes and writes the cache, the second reads it
        got = run_cli("exec", "run", "--request", str(request), "--out", str(tmp_path / "o.json"),
                      home=tmp_path / "home", env=env)
        assert got.returncode == 0, got.stdout + got.stderr
    assert not [n for n in os.listdir(tmp_path / "home") if n.startswith(".sandbox-probe")]
