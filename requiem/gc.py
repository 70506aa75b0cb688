"""CAS garbage collection: delete objects nothing references, and never one that is live.

Roots are every digest the history references (its `referenced_digests` view, after folding the
spool), pins (<home>/pins/<digest>) and the leases of runs in progress (their inputs, which no
record names yet: requiem.cas_lease). An object is a candidate only if it is unreferenced,
unpinned and was created at least `grace` before the GC started, so nothing written after the
start is ever touched. Writers that store objects and then spool the record naming them do both
inside `write_guard`; `--execute` deletes only while holding the guard exclusively, after a last
fold, so an object stored just before the GC started cannot lose the record that names it.
"""

from __future__ import annotations

import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from requiem import spool
from requiem.cas import Cas, ObjectInfo, check_digest
from requiem.cas_guard import exclusive_guard, write_guard
from requiem.cas_lease import leased_digests
from requiem.errors import INVALID_REQUEST, RequiemError

DEFAULT_GRACE = "1h"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as 500ms, 0s, 30m, 12h or 7d."""
    match = _DURATION.match(text.strip())
    if not match:
        raise RequiemError(INVALID_REQUEST, f"not a duration: {text!r} (use e.g. 0s, 90m, 24h, "
                                            "7d; units ms, s, m, h, d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _pins_dir(home: Any) -> Path:
    return Path(home.root) / "pins"


def pins(home: Any) -> set[str]:
    """Digests pinned in this home."""
    try:
        return {n for n in os.listdir(_pins_dir(home)) if len(n) == 64}
    except FileNotFoundError:
        return set()


def pin(home: Any, digest: str, pinned: bool = True) -> dict[str, Any]:
    """Pin (or unpin) a digest so GC keeps it whether or not the history references it."""
    check_digest(digest)
    path = _pins_dir(home) / digest
    was = path.exists()
    with write_guard(home.cas_root):
        if pinned:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        elif was:
            path.unlink(missing_ok=True)
    exists = Cas(home.cas_root).object_path(digest).exists()
    return {"ok": True, "digest": digest, "pinned": pinned, "was_pinned": was,
            "object_exists": exists}


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("inf")  # an unreadable time is treated as brand new: kept


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def _unreferenced(home: Any, old: list[ObjectInfo]) -> set[str]:
    """The digests among `old` that the history does not reference (folds the spool first)."""
    import pyarrow as pa

    from requiem.history import open_history

    with open_history(home) as con:
        if not old:
            return set()
        con.register("gc_old", pa.table({"digest": pa.array([i.digest for i in old], pa.string())}))
        try:
            rows = con.execute("SELECT digest FROM gc_old ANTI JOIN "
                               "(SELECT DISTINCT digest FROM referenced_digests) USING (digest)"
                               ).fetchall()
        finally:
            con.unregister("gc_old")
    return {digest for (digest,) in rows}


def collect(home: Any, execute: bool = False, grace: str = DEFAULT_GRACE,
            limit: int = 100) -> dict[str, Any]:
    """Find (and with execute, delete) unreferenced objects older than the grace period."""
    grace_s = parse_duration(grace)
    started = time.time()
    cutoff = started - grace_s
    cas = Cas(home.cas_root)
    readable: list[ObjectInfo] = []
    unreadable = 0
    for item in cas.list_objects():
        if isinstance(item, ObjectInfo):
            readable.append(item)
        else:
            unreadable += 1  # corrupt headers are verify's business, never GC's
    old = [i for i in readable if _epoch(i.created_at) < cutoff]
    if execute:
        # Fold the bulk of the backlog first so the exclusive hold only meets stragglers.
        from requiem.history import ingest

        ingest(home)
        with exclusive_guard(home.cas_root):
            candidates, spared, leased = _candidates(home, old)
            deleted = [i for i in candidates if cas.remove(i.digest)]
    else:
        candidates, spared, leased = _candidates(home, old)
        deleted = []
    report = _report(home, execute, grace, grace_s, started, readable, unreadable, old,
                     candidates, spared, deleted, limit)
    # Counted among "pinned" in the record too: runs in progress use them (requiem.cas_lease).
    report["leased"] = leased
    return report


def _candidates(home: Any, old: list[ObjectInfo]) -> tuple[list[ObjectInfo], int, int]:
    """(candidates, how many unreferenced objects pins or leases spare, how many leases do)."""
    unreferenced = _unreferenced(home, old)
    leased = leased_digests(home.cas_root) & unreferenced
    spared = pins(home) | leased
    candidates = [i for i in old if i.digest in unreferenced and i.digest not in spared]
    return candidates, len(unreferenced) - len(candidates), len(leased)


def _report(home: Any, execute: bool, grace: str, grace_s: float, started: float,
            readable: list[ObjectInfo], unreadable: int, old: list[ObjectInfo],
            candidates: list[ObjectInfo], spared: int, deleted: list[ObjectInfo],
            limit: int) -> dict[str, Any]:
    """The GC's answer, also spooled as a "cas_gc" history record (the CAS inventory after it)."""
    counts = {
        "objects_scanned": len(readable) + unreadable,
        "live": len(old) - len(candidates) - spared,
        "pinned": spared,
        "young": len(readable) - len(old),
        "unreadable": unreadable,
        "candidates": len(candidates),
        "candidate_bytes": sum(i.stored_size for i in candidates),
        "deleted": len(deleted),
        "deleted_bytes": sum(i.stored_size for i in deleted),
        "objects_after": len(readable) + unreadable - len(deleted),
        "original_bytes_after": sum(i.original_size for i in readable)
        - sum(i.original_size for i in deleted),
        "stored_bytes_after": sum(i.stored_size for i in readable)
        - sum(i.stored_size for i in deleted),
    }
    record = {"mode": "execute" if execute else "dry_run", "grace_ms": int(grace_s * 1000),
              "started_at": _iso(started), **counts}
    record_id = spool.write_record(Path(home.spool_dir), "cas_gc", record)
    listed = sorted(candidates, key=lambda i: (-i.stored_size, i.digest))[:limit]
    return {
        "ok": True,
        **record,
        "grace": grace,
        "candidates_listed": [{"digest": i.digest, "stored_size": i.stored_size,
                               "original_size": i.original_size, "created_at": i.created_at}
                              for i in listed],
        "record_id": record_id,
    }
