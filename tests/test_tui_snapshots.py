"""SVG snapshots of requiem-tui: a fixed history, clock, host, machine and doctor, so pixels hold.

Update after a deliberate change with:
    .venv/bin/python -m pytest tests/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import fcntl
import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
from textual.pilot import Pilot

from requiem import cas, cas_writer, history, spool
from requiem.analytics import Probes
from requiem.cas import Cas
from requiem.home import Home
from requiem.tui import RequiemApp
from tests import history_fixtures as hf
from tests.test_tui import SIZE, settle

NOW = datetime(2026, 3, 1, 10, 30, 0)
START = datetime(2026, 3, 1, 10, 0, 0)
# The status bar names the home, so it must not live under a random temp directory.
ROOT = Path("/tmp/requiem-tui-snapshots")

HEALTH = {
    "ok": True, "hash_primitive": "blake3", "hash_backend": "blake3-rust",
    "hash_version": "1.0.11", "hash_available": True, "compat_warning": False,
    "engine_version": "0.8.0", "protocol_version": "v1", "contract_version": "2.0",
    "cas_format_version": "v2",
    "sandbox_capabilities": {
        "enforced": ["network_isolation", "process_isolation", "workspace_confinement"],
        "partial": ["rlimits"],
        "unsupported": ["no_new_privs", "process_mitigations", "seccomp_bpf"],
        "reasons": {
            "network_isolation": "network namespace with only lo",
            "process_isolation": "pid namespace, killing its init ends the namespace",
            "workspace_confinement": "read-only /usr /etc, writable workspace only",
            "rlimits": "RLIMIT_NPROC does not bind uid 0 (run as a non-root uid)",
            "no_new_privs": "prctl(PR_SET_NO_NEW_PRIVS) refused: EPERM",
            "process_mitigations": "no MDWE on this kernel",
            "seccomp_bpf": "seccomp unavailable: EINVAL",
        },
        "backend": "zygote", "backend_reason": "bwrap missing; the zygote enforces the rest",
    },
}
HOST = {"cpu_percent": 12.0, "cpu_count": 2, "load_1m": 0.42, "memory_used": 3 << 30,
        "memory_total": 16 << 30, "disk_free": 40 << 30, "disk_total": 100 << 30,
        "disk_path": "/srv"}
DOCTOR = {"ok": False,
          "blockers": [{"id": "cas_corrupt", "message": "1 of 4 sampled CAS objects are corrupt",
                        "command": "requiem cas verify --all"}],
          "warnings": [{"id": "sandbox_unsupported",
                        "message": "sandbox capability seccomp_bpf is unsupported",
                        "command": "requiem health"}]}
PROBES = Probes(clock=lambda: NOW, host=lambda path: HOST, health=lambda home: HEALTH,
                doctor=lambda home: DOCTOR)


@pytest.fixture
def fixed_home(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A history written through the real producers with every timestamp chosen."""
    ROOT.mkdir(exist_ok=True)
    lock = os.open(ROOT / f".{request.node.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)  # another test run on this machine uses the same path
    root = ROOT / request.node.name
    shutil.rmtree(root, ignore_errors=True)
    home = Home.resolve(str(root))
    moments = (START + timedelta(seconds=7 * n) for n in range(10_000))

    def tick() -> str:
        return next(moments).isoformat(timespec="microseconds") + "Z"

    for module in (spool, cas, cas_writer):
        monkeypatch.setattr(module, "utc_now_iso", tick)
    store = Cas(home.cas_root)
    kept = store.put_bytes(b"id,value\n1,2\n")
    store.put_bytes(b"2026-03-01 INFO ok\n" * 2000, encoding="zstd")
    for n in range(60):
        outcome = {7: dict(ok=False, termination_reason="timeout"), 11: dict(refused=True),
                   13: dict(ok=False), 29: dict(ok=False)}.get(n, {})
        payload = hf.execution_payload(n, engine=("requiem", "requiem-perturbed")[n % 4 == 3],
                                       duration_ms=5.0 + (n * 37) % 90, dual_run=n % 4 == 3,
                                       inputs={"in/data.csv": kept.digest}, **outcome)
        if n == 11:
            payload["error_code"] = "path_escape"
        spool.write_record(home.spool_dir, "execution", payload)
        if n % 4 == 3:
            categories = [[], ["timing_diff"], ["digest_mismatch", "stdout_mismatch"]][n % 3]
            spool.write_record(home.spool_dir, "dual_run", hf.dual_run_payload(n, categories))
    history.record_cas_verify(home, {"mode": "all", "objects_total": 2, "objects_checked": 2,
                                     "bytes_checked": 38013, "corrupt": [
                                         {"digest": hf.digest_of("broken"),
                                          "reason": "stored blob hash mismatch"}]})
    history.ingest(home)
    stamp = NOW.timestamp() - 95  # "last ingest 1 min ago" against the fixed clock
    os.utime(history.history_path(home), (stamp, stamp))
    yield home
    shutil.rmtree(root, ignore_errors=True)
    os.close(lock)


def fixed_app(home: Home) -> RequiemApp:
    return RequiemApp(home, refresh_s=3600, probes=PROBES)


def test_main_screen(snap_compare: Any, fixed_home: Home) -> None:
    assert snap_compare(fixed_app(fixed_home), terminal_size=SIZE, run_before=settle)


def test_main_screen_filtered_and_sorted(snap_compare: Any, fixed_home: Home) -> None:
    async def filter_then_sort(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("slash", *"false", "enter")
        await settle(pilot)
        await pilot.press("s", "s", "s", "s")

    assert snap_compare(fixed_app(fixed_home), terminal_size=SIZE, run_before=filter_then_sort)
