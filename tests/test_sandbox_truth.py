"""The report tells the truth: probe evidence, backend choice, required capabilities, and downgrades."""

# The meta-tests take a primitive away (bwrap off PATH; `unshare` and then Landlock denied by a seccomp
# filter, as a Docker-like host would) and check that the report moves the capability out of `enforced`,
# and that the corresponding escape then really works: the report was right to stop claiming it.

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "sandbox_helpers"))

import harness  # noqa: E402

from requiem.errors import SANDBOX_UNAVAILABLE, RequiemError  # noqa: E402
from requiem.sandbox import (  # noqa: E402
    CAPABILITIES,
    NoneBackend,
    SandboxReport,
    check_required,
    machine_capabilities,
    select_backend,
)
from requiem.sandbox import _linux  # noqa: E402
from requiem.sandbox.probe import probe  # noqa: E402
from requiem.sandbox.zygote import ZygoteBackend  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PRIMITIVES = ("userns", "netns", "mountns", "pidns", "caps_ns", "caps_flat", "landlock", "seccomp", "nnp",
              "mdwe", "rlimits", "subreaper", "bwrap")


@pytest.fixture
def ws() -> Path:
    path = harness.shared_workspace()
    yield path
    harness.remove(path)


def test_probe_records_evidence() -> None:
    found = probe()
    for name in PRIMITIVES:
        entry = found[name]
        assert isinstance(entry["ok"], bool) and entry["evidence"], (name, entry)
        print(f"{name:10} {'ok ' if entry['ok'] else 'NO '} {entry['evidence']}")
    print(f"probe took {found['elapsed_ms']} ms (cached: {found['cached']})")
    assert found["tools"].keys() == {"bwrap", "prlimit", "setpriv"}


def test_machine_capabilities_shape() -> None:
    doc = machine_capabilities().to_json()
    assert sorted(doc["enforced"] + doc["partial"] + doc["unsupported"]) == sorted(CAPABILITIES)
    assert set(doc["reasons"]) == set(CAPABILITIES) and all(doc["reasons"].values())
    assert doc["backend"] in ("bwrap", "zygote", "none") and doc["backend_reason"]
    if os.geteuid() == 0:
        assert "rlimits" not in doc["enforced"], "RLIMIT_NPROC does not bind uid 0"


_TIMED = """
import json, sys, time
t0 = time.perf_counter()
from requiem.sandbox import machine_capabilities
from requiem.sandbox.probe import probe
t1 = time.perf_counter()
machine_capabilities(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1000, "ms": (t2 - t1) * 1000, "cached": probe()["cached"]}))
"""


def test_probe_is_fast_and_cached_on_disk(tmp_path: Path) -> None:
    def timed() -> dict:
        done = subprocess.run([sys.executable, "-c", _TIMED, str(tmp_path)], capture_output=True, text=True,
                              cwd=REPO, timeout=60, check=True)
        return json.loads(done.stdout)

    cold, warm = timed(), timed()
    print(f"machine_capabilities: cold {cold['ms']:.1f} ms, from the cache file {warm['ms']:.1f} ms; "
          f"importing requiem.sandbox {warm['import_ms']:.1f} ms")
    assert (cold["cached"], warm["cached"]) == (False, True)
    assert warm["ms"] < 10 and cold["ms"] < 500
    doc = json.loads((tmp_path / "sandbox-probe.json").read_text())
    doc["key"][0] = "another kernel"
    (tmp_path / "sandbox-probe.json").write_text(json.dumps(doc))
    assert timed()["cached"] is False  # a key mismatch means probing again


def test_select_backend_names_and_reuse() -> None:
    with pytest.raises(RequiemError) as info:
        select_backend("firejail")
    assert info.value.code == SANDBOX_UNAVAILABLE
    assert select_backend("auto") is select_backend("auto")
    none = select_backend("none")
    assert isinstance(none, NoneBackend)
    spec = harness.spec_for(Path("/tmp"), ["x"], 1, 2)
    assert none.report(spec).enforced == () and none.report(spec).partial == ()
    auto = select_backend("auto").report(spec)
    assert auto.backend_reason, auto
    if probe()["bwrap"]["ok"]:
        assert auto.backend == "bwrap" and "canary" in auto.backend_reason


def test_a_closed_zygote_is_replaced(ws: Path) -> None:
    """A Runner closes the backends it used; the next select_backend must not hand out a dead zygote."""
    first = harness.backend_or_skip("zygote")
    first.close()
    first.close()  # idempotent
    second = select_backend("zygote")
    assert second is not first
    assert harness.run(second, ws, ["true"], executable="/bin/true").exit.exit_code == 0


def test_check_required() -> None:
    report = SandboxReport.from_states({"seccomp_bpf": ("enforced", "x"), "rlimits": ("partial", "nproc")},
                                       "zygote")
    check_required(report, ["seccomp_bpf"])
    with pytest.raises(RequiemError) as info:
        check_required(report, ["seccomp_bpf", "rlimits", "teleportation"])
    assert info.value.code == SANDBOX_UNAVAILABLE
    assert set(info.value.detail["missing"]) == {"rlimits", "teleportation"}
    assert "partial: nproc" in info.value.detail["missing"]["rlimits"]


def test_readonly_paths_and_network_downgrade_honestly(ws: Path) -> None:
    for name in ("bwrap", "zygote"):
        backend = harness.backend_or_skip(name)
        extra = backend.report(harness.spec_for(ws, ["x"], 1, 2, readonly_paths=("/opt",)))
        assert extra.state("network_isolation") == "partial", extra.reasons["network_isolation"]
        networked = backend.report(harness.spec_for(ws, ["x"], 1, 2, allow_network=True))
        assert networked.state("network_isolation") == "unsupported"
        listeners = harness.Listeners(ws.parent)
        try:
            res = harness.attack(backend, ws, "net", *listeners.args(), allow_network=True)
            time.sleep(0.2)
            assert res.found["tcp_loopback"] == "ALLOWED" and "tcp" in listeners.drain()
        finally:
            listeners.close()


def _restricting(deny_landlock: bool):  # type: ignore[no-untyped-def]
    """A preexec_fn installing a Docker-like filter: no new namespaces (EPERM), optionally no Landlock."""
    def ins(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)

    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, eperm, enosys = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
    prog = [ins(ld, 0, 0, 0), ins(jeq, 0, 1, 272), ins(ret, 0, 0, eperm), ins(jeq, 0, 1, 435), ins(ret, 0, 0, enosys)]
    if deny_landlock:
        prog += [ins(jeq, 0, 1, nr) + ins(ret, 0, 0, enosys) for nr in (444, 445, 446)]
    prog += [ins(jeq, 0, 3, 56), ins(ld, 0, 0, 16), ins(jset, 0, 1, 0x7E020000), ins(ret, 0, 0, eperm),
             ins(ret, 0, 0, allow)]

    def install() -> None:
        _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
        _linux.seccomp_install(b"".join(prog))

    return install


def _in_restricted_process(ws: Path, preexec=None, path: str | None = None) -> dict:  # type: ignore[no-untyped-def]
    outside = ws.parent / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    (outside / "existing.txt").write_text("original")
    env = {"PYTHONPATH": str(REPO), "PATH": path or os.environ["PATH"], "HOME": str(Path.home())}
    done = subprocess.run([sys.executable, str(Path(harness.__file__).with_name("restricted.py")), str(ws.parent)],
                          preexec_fn=preexec, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    for name, (ok, err, evidence) in sorted(result["probe"].items()):
        print(f"{name:10} {'ok ' if ok else 'NO '} errno={err} {evidence}")
    print(json.dumps(result["report"], indent=1))
    return result


def test_bwrap_absent_from_path(ws: Path) -> None:
    result = _in_restricted_process(ws, path="/nonexistent")
    assert result["probe"]["bwrap"][0] is False and "not found" in result["probe"]["bwrap"][2]
    assert result["bwrap_error"] == SANDBOX_UNAVAILABLE
    report = result["report"]
    assert report["backend"] == "zygote" and "bwrap unusable" in report["backend_reason"]
    assert result["fs"]["write_workspace"] == "ALLOWED" and result["host_outside"] == ["existing.txt"]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the test's filter uses x86_64 syscall numbers")
def test_without_user_namespaces_the_report_downgrades(ws: Path) -> None:
    result = _in_restricted_process(ws, preexec=_restricting(deny_landlock=False))
    assert result["probe"]["userns"][:2] == [False, errno.EPERM]
    assert result["probe"]["bwrap"][0] is False and result["bwrap_error"] == SANDBOX_UNAVAILABLE
    report = result["report"]
    assert report["backend"] == "zygote"
    if not result["probe"]["landlock"][0]:
        pytest.skip("no Landlock here either")
    # Landlock still confines writes, and says so; the host agrees.
    assert "workspace_confinement" in report["enforced"] and "Landlock" in report["reasons"]["workspace_confinement"]
    assert result["fs"]["create_outside"] == "EACCES" and result["host_outside"] == ["existing.txt"]
    # No network namespace: only partial, and indeed a host pathname socket is reachable.
    assert report["reasons"]["network_isolation"] and "network_isolation" in report["partial"]
    assert result["net"]["pathname_unix"] == "ALLOWED" and "pathname" in result["received"]
    assert result["net"]["tcp_loopback"] != "ALLOWED" and {"tcp", "udp"}.isdisjoint(result["received"])


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the test's filter uses x86_64 syscall numbers")
def test_without_landlock_confinement_is_not_claimed_and_the_escape_works(ws: Path) -> None:
    result = _in_restricted_process(ws, preexec=_restricting(deny_landlock=True))
    assert result["probe"]["landlock"][:2] == [False, errno.ENOSYS]
    report = result["report"]
    assert "workspace_confinement" not in report["enforced"]
    assert result["fs"]["create_outside"] == "ALLOWED" and "new.txt" in result["host_outside"]


def test_zygote_carries_a_large_environment(ws: Path) -> None:
    backend = harness.backend_or_skip("zygote")
    out_r, out_w = os.pipe()
    spec = harness.spec_for(ws, ["sh", "-c", 'printf %s "$B0$B1$B2$B3$B4$B5" | wc -c'], out_w, out_w,
                            executable="/bin/sh")
    for i in range(6):  # 600 kB: beyond one SOCK_SEQPACKET message, so the plan travels in a memfd
        spec.env[f"B{i}"] = "x" * 100_000
    child = backend.spawn(spec)
    os.close(out_w)
    output = os.read(out_r, 100)
    assert child.wait(30) is not None
    child.kill_tree()
    os.close(out_r)
    assert output.strip() == b"600000"


def test_zygote_refuses_to_run_weaker_when_a_step_fails(ws: Path) -> None:
    backend = harness.backend_or_skip("zygote")
    with pytest.raises(OSError) as info:
        harness.run(backend, ws, ["true"], executable="/bin/true", cwd=str(ws / "missing"))
    assert "cwd" in str(info.value)


def test_zygote_death_kills_its_runs(ws: Path) -> None:
    backend = ZygoteBackend(probe())  # a private one: this test kills it
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    out_r, out_w = os.pipe()
    child = backend.spawn(harness.spec_for(ws, ["sleep", marker], out_w, out_w, executable="/bin/sleep"))
    os.close(out_w)
    assert harness.wait_for(lambda: harness.processes_with(marker))
    os.kill(backend._proc.pid, signal.SIGKILL)
    exit = child.wait(10)
    assert exit is not None and exit.signal == signal.SIGKILL
    assert harness.wait_for(lambda: not harness.processes_with(marker))
    os.close(out_r)
    with pytest.raises(OSError):
        backend.spawn(harness.spec_for(ws, ["true"], 1, 2, executable="/bin/true"))
    backend.close()


def test_zygote_close_kills_what_still_runs(ws: Path) -> None:
    backend = ZygoteBackend(probe())
    marker = f"{uuid.uuid4().int % 10**6 + 1000}"
    child = backend.spawn(harness.spec_for(ws, ["sleep", marker], 1, 2, executable="/bin/sleep"))
    assert harness.wait_for(lambda: harness.processes_with(marker))
    backend.close()
    assert child.wait(5) is not None
    assert harness.wait_for(lambda: not harness.processes_with(marker))
