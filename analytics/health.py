"""Facts about the installation around the history: engine policy, spool, database file, host."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from requiem import history, spool
from requiem.errors import RequiemError
from requiem.home import Home


def host_facts(path: str | os.PathLike[str]) -> dict[str, Any]:
    """CPU, memory and the free space of the disk holding `path` (psutil; never blocks)."""
    import psutil

    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(where))
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_count": psutil.cpu_count(),
        "load_1m": os.getloadavg()[0],
        "memory_used": memory.total - memory.available,
        "memory_total": memory.total,
        "disk_free": disk.free,
        "disk_total": disk.total,
        "disk_path": str(where),
    }


def engine_policy(home: Home) -> dict[str, Any]:
    """The default engine and dual-run sampling rate in effect (config.json, then environment)."""
    from requiem.config import defaults, load_config

    try:
        settings, error = load_config(home), None
    except RequiemError as exc:
        settings, error = defaults(), exc.message
    policy = settings["engine_selection_policy"]
    return {"default_engine": policy["default_engine"],
            "dual_run_sampling_rate": policy["dual_run_sampling_rate"], "error": error}


def spool_facts(home: Home) -> dict[str, int]:
    """Records waiting in the spool to be folded, and records quarantined as unreadable."""
    return {"pending": spool.pending_count(Path(home.spool_dir)),
            "quarantined": history.quarantined_count(home)}


def database_facts(home: Home) -> dict[str, Any]:
    """The history file: where, how big (with its WAL), and when it last changed (last ingest)."""
    path = history.history_path(home)
    sizes, times = 0, []
    for part in (path, path.with_name(path.name + ".wal")):
        try:
            stat = part.stat()
        except FileNotFoundError:
            continue
        sizes += stat.st_size
        times.append(stat.st_mtime)
    last = (datetime.fromtimestamp(max(times), timezone.utc).replace(tzinfo=None)
            if times else None)
    return {"path": str(path), "bytes": sizes, "last_ingest": last}


def doctor_findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The doctor's blockers then warnings as {level, id, message, command} rows."""
    findings = []
    for level in ("blockers", "warnings"):
        for item in report.get(level) or []:
            entry = item if isinstance(item, dict) else {"message": str(item)}
            findings.append({
                "level": level[:-1],
                "id": entry.get("id"),
                "message": entry.get("message") or str(entry),
                "command": entry.get("command"),
            })
    return findings
