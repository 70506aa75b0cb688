"""`requiem cas gc`, pins and the write guard: unreferenced objects go, live ones never do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from requiem import spool
from requiem.cas import Cas
from requiem.history import open_history
from requiem.home import Home
from tests.conftest import cli_command
from tests.history_fixtures import dual_run_payload, execution_payload
from tests.test_exec import PLAIN

ROOT_FIELDS = ("request_object", "result_object", "stdout", "stderr", "output", "input",
               "primary", "secondary")


def _objects(home: Path, labels: list[str]) -> dict[str, str]:
    cas = Cas(home / "cas")
    return {label: cas.put_bytes(f"content of {label}\n".encode()).digest for label in labels}


def _reference(home: Path, d: dict[str, str]) -> None:
    """One execution and one dual run that between them name every kind of root."""
    spool_dir = home / "spool"
    payload = execution_payload(1, request_object=d["request_object"],
                                result_object=d["result_object"], stdout_digest=d["stdout"],
                                outputs={"out.txt": d["output"]}, inputs={"in.txt": d["input"]})
    payload["stderr_digest"] = d["stderr"]
    spool.write_record(spool_dir, "execution", payload)
    spool.write_record(spool_dir, "dual_run", dual_run_payload(1, primary_object=d["primary"],
                                                               secondary_object=d["secondary"]))


def test_dry_run_lists_only_unreferenced_unpinned_objects(cli, home: Path) -> None:
    d = _objects(home, [*ROOT_FIELDS, "pinned", "orphan1", "orphan2"])
    _reference(home, d)
    assert cli("cas", "pin", "--digest", d["pinned"]).json["pinned"] is True
    time.sleep(0.01)
    got = cli("cas", "gc", "--grace", "0s")
    assert got.returncode == 0, got.stdout
    doc = got.json
    assert doc["mode"] == "dry_run" and doc["deleted"] == 0
    assert {c["digest"] for c in doc["candidates_listed"]} == {d["orphan1"], d["orphan2"]}
    assert doc["candidates"] == 2 and doc["pinned"] == 1 and doc["live"] == len(ROOT_FIELDS)
    assert doc["candidate_bytes"] == sum(c["stored_size"] for c in doc["candidates_listed"])
    assert all(Cas(home / "cas").contains(digest) for digest in d.values())


def test_execute_deletes_candidates_and_spooled_records_count_as_roots(cli, home: Path) -> None:
    d = _objects(home, [*ROOT_FIELDS, "pinned", "unpinned", "orphan"])
    assert cli("history", "ingest").returncode == 0
    _reference(home, d)  # left in the spool: GC must fold it before computing roots
    cli("cas", "pin", "--digest", d["pinned"])
    cli("cas", "pin", "--digest", d["unpinned"])
    unpinned = cli("cas", "unpin", "--digest", d["unpinned"]).json
    assert unpinned["was_pinned"] is True and unpinned["pinned"] is False
    time.sleep(0.01)
    got = cli("cas", "gc", "--execute", "--grace", "0s").json
    assert got["mode"] == "execute" and got["deleted"] == 2
    assert got["deleted_bytes"] == got["candidate_bytes"] > 0
    cas = Cas(home / "cas")
    assert not cas.contains(d["orphan"]) and not cas.contains(d["unpinned"])
    kept = {label: digest for label, digest in d.items() if label not in ("orphan", "unpinned")}
    assert all(cas.contains(digest) and cas.verify_object(digest) is None
               for digest in kept.values())
    with open_history(Home.resolve(str(home))) as con:
        runs = con.execute("SELECT mode, deleted, objects_after FROM cas_gc_runs").fetchall()
    assert runs == [("execute", 2, len(kept))]


def test_the_grace_period_keeps_young_objects(cli, home: Path) -> None:
    _objects(home, ["young1", "young2"])
    got = cli("cas", "gc", "--execute", "--grace", "1h").json
    assert (got["young"], got["candidates"], got["deleted"]) == (2, 0, 0)
    assert len(list(Cas(home / "cas").list_digests())) == 2


@pytest.mark.parametrize("grace", ["5", "1w", "-1s", "s"])
def test_a_bad_grace_is_a_usage_error(cli, grace: str) -> None:
    got = cli("cas", "gc", "--grace", grace)
    assert got.returncode == 2 and got.json["error"]["code"] == "invalid_request"


def test_pin_rejects_what_is_not_a_digest(cli) -> None:
    got = cli("cas", "pin", "--digest", "../../etc/passwd")
    assert got.returncode == 1 and got.json["error"]["code"] == "invalid_request"


def test_gc_feeds_the_cas_inventory_metrics(cli, home: Path) -> None:
    _objects(home, ["a", "b", "c"])
    cli("cas", "gc")
    metrics = cli("metrics").json["metrics"]
    assert metrics["requiem_cas_objects"]["samples"][0]["value"] == 3
    assert metrics["requiem_cas_original_bytes"]["samples"][0]["value"] == sum(
        len(f"content of {x}\n") for x in "abc")


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from requiem.cas import Cas
    from requiem.gc import write_guard
    from requiem.spool import write_record
    from tests.history_fixtures import execution_payload

    home, name, stop = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    cas = Cas(home / "cas")
    n = 0
    while not stop.exists() or n < 3:
        with write_guard(home / "cas"):
            fresh = cas.put_bytes(f"{name} output {n}".encode()).digest
            # Re-references an object that existed, unreferenced, before any GC started.
            old = cas.put_bytes(f"reused {n % 10}".encode()).digest
            time.sleep(0.3)  # a slow runner between storing outputs and spooling its record
            write_record(home / "spool", "execution",
                         execution_payload(n, outputs={"o": fresh}, stdout_digest=old))
        n += 1
    print(n)
""")


@pytest.mark.slow
def test_gc_racing_writers_never_deletes_a_live_object(home: Path, tmp_path: Path) -> None:
    cas = Cas(home / "cas")
    orphans = {cas.put_bytes(f"orphan {n}".encode()).digest for n in range(20)}
    for n in range(10):
        cas.put_bytes(f"reused {n}".encode())
    stop = tmp_path / "stop"
    repo = Path(__file__).resolve().parent.parent
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(home), f"w{i}", str(stop)],
                                cwd=repo, stdout=subprocess.PIPE, text=True) for i in range(3)]
    try:
        for _ in range(3):
            got = subprocess.run(cli_command() + ["--home", str(home), "cas", "gc", "--execute",
                                                  "--grace", "0s"], capture_output=True,
                                 text=True, timeout=120, check=False)
            assert got.returncode == 0, got.stdout + got.stderr
    finally:
        stop.touch()
        written = [int(w.communicate(timeout=60)[0]) for w in writers]
    assert all(w.returncode == 0 for w in writers) and sum(written) >= 9
    final = subprocess.run(cli_command() + ["--home", str(home), "cas", "gc", "--execute",
                                            "--grace", "0s"], capture_output=True, text=True,
                           check=False)
    assert final.returncode == 0
    with open_history(Home.resolve(str(home))) as con:
        # The digests the writers stored (the payload's other digests name nothing stored).
        live = {d for (d,) in con.execute("SELECT stdout_digest FROM executions UNION "
                                          "SELECT output_digests['o'] FROM executions").fetchall()}
        recorded = con.execute("SELECT count(*) FROM executions").fetchall()[0][0]
    assert recorded == sum(written)
    missing = [d for d in live if not cas.contains(d) or cas.verify_object(d) is not None]
    assert missing == []
    assert not any(cas.contains(d) for d in orphans)


def test_a_run_in_progress_keeps_its_unreferenced_inputs(cli, home: Path, tmp_path: Path) -> None:
    cas = Cas(home / "cas")
    data = cas.put_bytes(b"an input nothing references yet\n").digest
    ws = tmp_path / "ws"
    ws.mkdir()
    request = tmp_path / "request.json"
    request.write_text(json.dumps({
        "command": "sh", "argv": ["-c", "touch started; sleep 2; cat in.txt"],
        "inputs": {"in.txt": data}, "workspace_root": str(ws), "policy": PLAIN}))
    run = subprocess.Popen(cli_command() + ["--home", str(home), "exec", "run", "--request",
                                            str(request), "--out", str(tmp_path / "out.json")],
                           stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (ws / "started").exists():
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.02)
        got = cli("cas", "gc", "--execute", "--grace", "0s").json
        assert got["leased"] == 1 and cas.contains(data)
    finally:
        assert run.wait(timeout=60) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["stdout"] == "an input nothing references yet\n"
    assert list((home / "cas" / "leases").iterdir()) == []
    # Its record names it now; the run's end did not make it a candidate.
    assert cli("cas", "gc", "--execute", "--grace", "0s").json["leased"] == 0
    assert cas.contains(data)


def test_a_lease_left_by_a_dead_process_spares_nothing(cli, home: Path) -> None:
    cas = Cas(home / "cas")
    orphan = cas.put_bytes(b"leased by a process that died\n").digest
    dead = subprocess.Popen(["true"])
    dead.wait()
    leases = home / "cas" / "leases"
    leases.mkdir(parents=True)
    (leases / f"{dead.pid}.0123456789abcdef").write_text(orphan + "\n")
    time.sleep(0.01)
    got = cli("cas", "gc", "--execute", "--grace", "0s").json
    assert got["leased"] == 0 and got["deleted"] == 1 and not cas.contains(orphan)
    assert list(leases.iterdir()) == []


def test_a_child_forked_inside_a_lease_leaves_the_parents_lease_in_place(home: Path) -> None:
    from requiem.cas_lease import lease

    leases = home / "cas" / "leases"
    held = lease(home / "cas", ["b" * 64])
    held.__enter__()
    child = os.fork()
    if child == 0:  # leaves the lease it inherited, as code after a fork would
        try:
            held.__exit__(None, None, None)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    assert len(list(leases.iterdir())) == 1  # still the parent's
    held.__exit__(None, None, None)
    assert list(leases.iterdir()) == []
