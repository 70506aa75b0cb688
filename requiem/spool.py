"""The spool: durable history records, one atomic file each, waiting to be folded into DuckDB."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from requiem import canonical, hashing
from requiem.clock import utc_now_iso

RECORD_SCHEMA = 1
RECORD_KINDS = ("execution", "dual_run", "cas_verify", "cas_gc", "cas_put", "bench")


def write_record(spool_dir: Path, kind: str, payload: dict[str, Any]) -> str:
    """Make one record durable in the spool (temp, fsync, rename) and return its record id.

    The record id is BLAKE3 of the record's canonical bytes, so folding the same file twice
    inserts it once. Producers never open DuckDB: this costs one file create.
    """
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    record = {"kind": kind, "schema": RECORD_SCHEMA, "recorded_at": utc_now_iso(), **payload}
    body = canonical.stable_dumps(record)
    record_id = hashing.hash_bytes(body)
    spool_dir.mkdir(parents=True, exist_ok=True)
    final = spool_dir / f"{record['recorded_at'][:10]}_{kind}_{record_id}.json"
    temp = spool_dir / f".{os.getpid()}.{os.urandom(6).hex()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(body)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    os.rename(temp, final)
    # The rename itself must survive a power cut: the caller is told the record is durable.
    dir_fd = os.open(spool_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return record_id


def pending_names(spool_dir: Path) -> list[str]:
    """Names of the spool files waiting to be folded, oldest first (temp files excluded)."""
    try:
        return sorted(n for n in os.listdir(spool_dir) if n.endswith(".json") and n[0] != ".")
    except FileNotFoundError:
        return []
