"""`requiem demo`: a realistic history made by really running a mixed workload through the engine.

Every row the TUI then shows comes from a real run, a real CAS put or a real `cas verify`:
deterministic commands, nondeterministic ones under dual-run (a quiet start, an incident, a
recovery), a timeout, failing commands, refused requests (path escape, missing input, bad
request), CAS puts with and without zstd, and one object corrupted on purpose for triage.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, NamedTuple

from requiem import gc, hashing, history, spool
from requiem.cas import HEADER_SIZE, Cas
from requiem.home import Home

WORKSPACE = "demo-workspace"
# Nondeterministic dual runs per wave: quiet, an incident (waves 3-4), then recovery.
INCIDENT = (1, 1, 2, 6, 6, 2)
WAVE_PAUSE_S = 0.4
HOST = {"policy": {"deterministic": False}}  # the host's environment: what dual-run perturbs


class Job(NamedTuple):
    """One request of the workload and the engine it runs on (None: the default)."""

    label: str
    request: dict[str, Any]
    engine: str | None = None


def _files() -> dict[str, bytes]:
    """The workspace's input files: a CSV, a word list, an application log, random bytes."""
    rows = "".join(f"{i},{(i * 7919) % 1000},{'abcde'[i % 5]}\n" for i in range(400))
    words = "".join(f"{w}\n" for w in ("delta", "alpha", "echo", "charlie", "bravo") * 40)
    log = "".join(f"2026-03-01T10:00:{i % 60:02d}Z {'ERROR' if i % 17 == 0 else 'INFO'} "
                  f"worker-{i % 4} handled request {i}\n" for i in range(4000))
    return {"data.csv": ("id,value,group\n" + rows).encode(), "words.txt": words.encode(),
            "app.log": log.encode(), "blob.bin": os.urandom(256 << 10),
            "notes.txt": b"requiem demo workspace\n"}


def _put_files(home: Home, cas: Cas, workspace: Path) -> dict[str, str]:
    """Write the workspace files, store them (zstd for some), spool a cas_put record for each."""
    encodings = {"data.csv": "identity", "words.txt": "zstd", "app.log": "zstd",
                 "blob.bin": "zstd", "notes.txt": "identity"}
    digests = {}
    for name, content in _files().items():
        path = workspace / name
        path.write_bytes(content)
        existed = cas.contains(hashing.hash_bytes(content))
        info = cas.put_file(path, encoding=encodings[name])
        spool.write_record(home.spool_dir, "cas_put", {**info.to_json(), "existed": existed})
        digests[name] = info.digest
    return digests


def _jobs(workspace: Path, puts: dict[str, str], wave: int) -> list[Job]:
    """The requests of one wave, in the order they run (two stored files serve as inputs)."""
    ws = str(workspace)

    def req(command: str, *argv: str, **extra: Any) -> dict[str, Any]:
        return {"command": command, "argv": list(argv), "workspace_root": ws,
                "timeout_ms": 20000, **extra}

    csv = {"inputs": {"in/data.csv": puts["data.csv"]}}
    words = {"inputs": {"in/words.txt": puts["words.txt"]}}
    jobs = [
        Job("sort", req("sh", "-c", "sort -t, -k2n in/data.csv > out/sorted.csv",
                        outputs=["out/sorted.csv"], **csv)),
        Job("sum", req("awk", "-F,", "NR > 1 {s += $2} END {print s}", "in/data.csv", **csv)),
        Job("count", req("wc", "-l", "in/words.txt", **words)),
        Job("uniq", req("sh", "-c", "sort in/words.txt | uniq -c", **words)),
        Job("checksum", req("sha256sum", "in/data.csv", **csv)),
        Job("upper", req("sh", "-c", "tr a-z A-Z < in/words.txt", **words)),
        Job("seq", req("seq", "1", str(50 + wave))),
        # Agreeing dual runs: deterministic programs give the perturbed twin the same answer.
        Job("sort", req("sort", "in/words.txt", **words), "dual"),
        Job("sum", req("awk", "-F,", "NR > 1 {s += $2} END {print s}", "in/data.csv", **csv),
            "dual"),
        # The same request run again reads the clock: drift (one request, many results).
        Job("clock", req("date", "+%s.%N")),
        Job("clock", req("date", "+%s.%N")),
        Job("fail", req("sh", "-c", "echo 'error: 3 widgets failed validation' >&2; exit 3")),
        Job("fail", req("cat", "in/missing.txt")),
    ]
    nondeterministic = [
        Job("nanos", req("date", "+%N"), "dual"),
        Job("random", req("sh", "-c", "head -c 8 /dev/urandom | od -An -tx1"), "dual"),
        Job("locale", req("sh", "-c", "echo \"lang=$LANG tz=$TZ\"", **HOST), "dual"),
        Job("stderr", req("sh", "-c", "date +%N >&2"), "dual"),
        Job("coinflip", req("sh", "-c", "exit $(( $(od -An -N1 -tu1 /dev/urandom) % 2 ))"),
            "dual"),
        Job("jitter", req("sh", "-c", "sleep 0.$(( $(od -An -N1 -tu1 /dev/urandom) % 3 ))"),
            "dual"),
    ]
    count = INCIDENT[wave % len(INCIDENT)]
    jobs += nondeterministic[:count] if count < len(nondeterministic) else nondeterministic
    if wave == 3:
        jobs += [
            Job("timeout", req("sleep", "5", timeout_ms=300)),
            Job("escape", req("sh", "-c", "cat /etc/hostname > out.txt",
                              outputs=["../../etc/passwd"])),
            Job("missing", req("cat", "in/gone.txt",
                               inputs={"in/gone.txt": "0" * 64})),
            Job("bad", {"argv": ["no", "command"], "workspace_root": ws}),
        ]
    return jobs


def _outcome(result: dict[str, Any]) -> str:
    if result.get("ok") is True:
        return "ok"
    error = result.get("error")
    if isinstance(error, dict):
        return "refused"
    return "timeout" if result.get("termination_reason") == "timeout" else "failed"


def _corrupt(cas: Cas, digest: str) -> None:
    """Flip one byte of an object's stored blob: the header stays valid, the content does not."""
    path = cas.object_path(digest)
    with open(path, "r+b") as handle:
        handle.seek(HEADER_SIZE)
        first = handle.read(1)[0]
        handle.seek(HEADER_SIZE)
        handle.write(bytes([first ^ 0xFF]))


def _write_config(home: Home) -> None:
    """A config like production's: requiem by default, a tenth of runs sampled for dual-run."""
    if home.config_path.exists():
        return
    home.root.mkdir(parents=True, exist_ok=True)
    home.config_path.write_text(json.dumps({
        "config_version": 1,
        "engine_selection_policy": {"default_engine": "requiem", "dual_run_sampling_rate": 0.1},
    }, indent=2) + "\n")


def run_demo(home: Home, waves: int = len(INCIDENT),
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the demo workload into a home and return what it did (counts, the corrupted object)."""
    from requiem.engines import Session

    started = time.perf_counter()
    say = progress or (lambda _message: None)
    _write_config(home)
    workspace = home.root / WORKSPACE
    for sub in ("in", "out"):
        (workspace / sub).mkdir(parents=True, exist_ok=True)
    cas = Cas(home.cas_root)
    puts = _put_files(home, cas, workspace)
    outcomes: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    dual_runs = 0
    victim = None
    session = Session(home, group_commit=True)  # as `exec batch` runs: records in groups, packs
    try:
        for wave in range(waves):
            say(f"wave {wave + 1}/{waves}")
            if wave:
                time.sleep(WAVE_PAUSE_S)
            for job in _jobs(workspace, puts, wave):
                result = session.execute(job.request, job.engine)
                outcomes[_outcome(result)] += 1
                report = result.get("dual_run")
                if isinstance(report, dict):
                    dual_runs += 1
                    categories.update(report["categories"])
                if job.label == "clock" and result.get("ok"):
                    victim = result["stdout_digest"]
    finally:
        session.close()
    if victim:
        say("corrupting one object for the triage view")
        _corrupt(cas, victim)
    say("verifying the CAS, then a GC dry run")
    verify = cas.verify()
    history.record_cas_verify(home, verify)
    collected = gc.collect(home, execute=False, grace="0s")
    folded = history.ingest(home)
    return {
        "ok": True,
        "home": str(home.root),
        "elapsed_s": round(time.perf_counter() - started, 2),
        "requests": sum(outcomes.values()),
        "outcomes": dict(sorted(outcomes.items())),
        "dual_runs": dual_runs,
        "mismatch_categories": dict(sorted(categories.items())),
        "cas_puts": puts,
        "corrupted": victim,
        "verify": {"objects_checked": verify["objects_checked"],
                   "corrupt": [c["digest"] for c in verify["corrupt"]]},
        "gc_dry_run": {"candidates": collected["candidates"],
                       "candidate_bytes": collected["candidate_bytes"]},
        "history": folded,
        "next": f"requiem-tui --home {home.root}",
    }


def stderr_progress(message: str) -> None:
    """Progress on stderr, and only when it is a terminal (stdout carries the JSON)."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\rrequiem demo: {message}\033[K")
        sys.stderr.flush()
