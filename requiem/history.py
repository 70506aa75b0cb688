"""The history: spool records folded into DuckDB inside short holds serialised by a lock file.

DuckDB lets one process hold a database file read-write and nobody read beside it, so every
consumer takes `<history>.lock` (flock: exclusive to fold or write, shared to read), opens the
database, works, and closes it. A holder that waits longer than `history.lock_timeout_s` gets
history_busy, never a DuckDB lock error. Spool files are read before the hold, folded in one
transaction per batch (Arrow → INSERT … SELECT, anti-joined on record_id so a record folds
once), and deleted only after that transaction commits. Tables and columns:
requiem.history_schema.
"""

from __future__ import annotations

import fcntl
import os
import random
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from requiem import spool
from requiem.errors import HISTORY_BUSY, RequiemError
from requiem.history_schema import (
    KINDS,
    SCHEMA_VERSION,
    check_supported,
    insert_statements,
    migrate,
)

__all__ = ["SCHEMA_VERSION", "history_status", "ingest", "open_history", "record_cas_verify"]

BATCH_RECORDS = 65536
MAX_RECORD_BYTES = 16 << 20
QUARANTINE = "quarantine"
_NAME_PATTERN = r"^\d{4}-\d{2}-\d{2}_([a-z_]+)_[0-9a-f]{64}\.json$"
_READ_CHUNK = 1 << 16
_WARNINGS_SHOWN = 20
# Statically linked extensions (json, parquet) suffice; never reach for the network.
_DUCKDB_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def _settings(home: Any) -> tuple[Path, float]:
    """The database path (config history.path, else <home>/history.duckdb) and lock timeout."""
    from requiem.config import load_config

    settings = load_config(home)["history"]
    path = Path(settings["path"]) if settings["path"] else Path(home.history_path)
    return path, float(settings["lock_timeout_s"])


def history_path(home: Any) -> Path:
    """Where the history database of a home lives."""
    return _settings(home)[0]


def _acquire(lock_path: Path, exclusive: bool, deadline: float, timeout: float) -> int:
    """Take the flock on the lock file, polling with jitter until the deadline."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    delay = 0.002
    while True:
        try:
            fcntl.flock(fd, mode)
            return fd
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.close(fd)
                raise RequiemError(
                    HISTORY_BUSY,
                    f"the history is busy: another process held {lock_path.name} for over "
                    f"{timeout:g} s; retry, or raise history.lock_timeout_s in config.json",
                    path=str(lock_path), waited_s=timeout,
                ) from None
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 0.05)


def _connect(path: Path, read_only: bool, deadline: float, timeout: float) -> Any:
    """Open DuckDB; a lock held by a process outside our protocol is waited out, not shown."""
    import duckdb

    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=_DUCKDB_CONFIG)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise RequiemError(HISTORY_BUSY,
                                   f"the history {path} is held by another program for over "
                                   f"{timeout:g} s; retry", path=str(path)) from None
            time.sleep(random.uniform(0.01, 0.05))


def _quiet(con: Any) -> None:
    """No progress bar: it would write into the one JSON document a command prints."""
    import duckdb

    try:
        con.execute("SET enable_progress_bar = false")
    except duckdb.Error:
        pass  # inside Jupyter DuckDB refuses the setting unless ipywidgets is installed


@contextmanager
def _hold(home: Any, exclusive: bool) -> Iterator[Any]:
    """One short hold of the database: lock, connect (migrating if writable), yield, close."""
    path, timeout = _settings(home)
    deadline = time.monotonic() + timeout
    lock_fd = _acquire(path.with_name(path.name + ".lock"), exclusive, deadline, timeout)
    try:
        con = _connect(path, not exclusive, deadline, timeout)
        try:
            _quiet(con)
            if exclusive:
                migrate(con, str(path))
            yield con
        finally:
            con.close()
    finally:
        os.close(lock_fd)


@dataclass
class _Batch:
    """Spool files read before a hold: their bytes, and those that could not be read."""

    names: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _read_batch(spool_dir: Path, names: list[str]) -> _Batch:
    """Read spool files in a tight loop (one open, read, close each); vanished files are skipped."""
    batch = _Batch()
    if not names:
        return batch
    dir_fd = os.open(spool_dir, os.O_RDONLY | os.O_DIRECTORY)
    keep_name, keep_body = batch.names.append, batch.bodies.append
    try:
        for name in names:
            try:
                fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
            except FileNotFoundError:
                continue  # another process folded it already
            except OSError as exc:
                batch.unreadable.append((name, f"cannot open: {exc.strerror}"))
                continue
            try:
                body = os.read(fd, _READ_CHUNK)
                if len(body) == _READ_CHUNK:
                    body = _read_rest(fd, body)
            except OSError as exc:
                batch.unreadable.append((name, f"cannot read: {exc.strerror}"))
                continue
            finally:
                os.close(fd)
            if len(body) > MAX_RECORD_BYTES:
                batch.unreadable.append((name, f"larger than {MAX_RECORD_BYTES} bytes"))
                continue
            if not body.isascii() and not _is_utf8(body):
                batch.unreadable.append((name, "not UTF-8 (corrupt)"))
                continue
            keep_name(name)
            keep_body(body)
    finally:
        os.close(dir_fd)
    return batch


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _read_rest(fd: int, head: bytes) -> bytes:
    parts = [head]
    size = len(head)
    while size <= MAX_RECORD_BYTES:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _arrow_batch(batch: _Batch) -> Any:
    """The batch as an Arrow table (name, body); bodies share one buffer, no per-row objects."""
    import itertools

    import pyarrow as pa

    offsets = pa.array(list(itertools.accumulate(map(len, batch.bodies), initial=0)), pa.int64())
    # Every body was checked to be UTF-8 when read; Arrow need not check it again.
    bodies = pa.LargeStringArray.from_buffers(len(batch.bodies), offsets.buffers()[1],
                                         pa.py_buffer(b"".join(batch.bodies)))
    table = pa.table({"name": pa.array(batch.names, pa.string()), "body": bodies})
    # Several record batches let DuckDB parse on several threads when it has them.
    return pa.Table.from_batches(table.to_batches(max_chunksize=8192))


_STAGE = f"""
CREATE OR REPLACE TEMP TABLE staged AS
SELECT name, record_id, kind, recorded_at, body,
       CASE WHEN kind = '' THEN 'unrecognised spool file name'
            WHEN NOT valid THEN 'not JSON (truncated or corrupt)'
            WHEN envelope[1] IS DISTINCT FROM kind
                 OR envelope[2] IS DISTINCT FROM '{spool.RECORD_SCHEMA}' OR recorded_at IS NULL
              THEN 'wrong schema: not a schema-{spool.RECORD_SCHEMA} "' || kind
                   || '" record with a recorded_at'
       END AS problem
FROM (
  SELECT *, TRY_CAST(envelope[3] AS TIMESTAMP) AS recorded_at
  FROM (
    SELECT *, CASE WHEN valid
                   THEN json_extract_string(body, ['$.kind', '$.schema', '$.recorded_at'])
              END AS envelope
    FROM (
      SELECT name, substr(name, -69, 64) AS record_id,
             regexp_extract(name, '{_NAME_PATTERN}', 1) AS kind,
             body, json_valid(body) AS valid
      FROM spool_batch)))
"""


def _fold(con: Any, batch: _Batch, counts: dict[str, int]) -> None:
    """Insert one batch in one transaction; classify what cannot be folded."""
    batch.problems = list(batch.unreadable)
    if not batch.names:
        return
    con.register("spool_batch", _arrow_batch(batch))
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(_STAGE)
        valid = dict(con.execute("SELECT kind, count(*) FROM staged WHERE problem IS NULL "
                                 "GROUP BY kind").fetchall())
        inserted = 0
        for kind in valid:
            if kind not in KINDS:
                continue
            for statement in insert_statements(kind):
                rows = con.execute(statement).fetchall()[0][0]
            inserted += rows  # the last statement fills the kind's own table
        batch.problems += con.execute(
            "SELECT name, CASE WHEN problem IS NULL THEN 'unknown record kind ' || kind "
            "ELSE problem END FROM staged WHERE problem IS NOT NULL OR kind NOT IN "
            f"({', '.join(repr(k) for k in KINDS)})").fetchall()
        con.execute("DROP TABLE staged")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("spool_batch")
    bad = {name for name, _ in batch.problems}
    batch.folded = [n for n in batch.names if n not in bad]
    counts["folded"] += inserted
    counts["duplicates"] += sum(v for k, v in valid.items() if k in KINDS) - inserted


def _settle(spool_dir: Path, batch: _Batch) -> int:
    """After the commit: delete folded files, move the unfoldable to the quarantine; count those."""
    if not batch.folded and not batch.problems:
        return 0
    dir_fd = os.open(spool_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in batch.folded:
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
    finally:
        os.close(dir_fd)
    if not batch.problems:
        return 0
    quarantine = spool_dir / QUARANTINE
    quarantine.mkdir(exist_ok=True)
    moved = 0
    for name, reason in batch.problems:
        try:
            os.rename(spool_dir / name, quarantine / name)
        except FileNotFoundError:
            continue
        moved += 1
        if moved <= _WARNINGS_SHOWN:
            sys.stderr.write(f"requiem: warning: quarantined spool record {name}: {reason} "
                             f"(moved to {quarantine})\n")
    if moved > _WARNINGS_SHOWN:
        sys.stderr.write(f"requiem: warning: {moved - _WARNINGS_SHOWN} more spool records "
                         f"quarantined in {quarantine}\n")
    return moved


def _fold_held(home: Any, batch: _Batch, counts: dict[str, int]) -> None:
    with _hold(home, exclusive=True) as con:
        # One DuckDB thread: the other core reads and deletes spool files meanwhile.
        con.execute("SET threads = 1")
        _fold(con, batch, counts)


def _fold_all(home: Any, names: list[str], counts: dict[str, int]) -> None:
    """Fold names batch by batch, each in a hold of its own so other consumers get turns.

    DuckDB releases the GIL, so while a helper thread folds one batch this thread deletes the
    previous batch's files and reads the next one's.
    """
    from concurrent.futures import ThreadPoolExecutor

    spool_dir = Path(home.spool_dir)
    chunks = [names[i:i + BATCH_RECORDS] for i in range(0, len(names), BATCH_RECORDS)]
    if not chunks:
        return
    folded: _Batch | None = None
    batch = _read_batch(spool_dir, chunks[0])
    with ThreadPoolExecutor(1, "history-fold") as folder:
        for index in range(len(chunks)):
            running = folder.submit(_fold_held, home, batch, counts)
            if folded is not None:
                counts["quarantined"] += _settle(spool_dir, folded)
            more = index + 1 < len(chunks)
            upcoming = _read_batch(spool_dir, chunks[index + 1]) if more else None
            running.result()
            folded, batch = batch, upcoming
    counts["quarantined"] += _settle(spool_dir, folded)


def ingest(home: Any) -> dict[str, int]:
    """Fold every spool record present now into the history; return the counts.

    `folded` records were inserted, `duplicates` were already there (a fold interrupted after
    its commit), `quarantined` could not be read as records and moved to spool/quarantine/.
    """
    counts = {"folded": 0, "duplicates": 0, "quarantined": 0}
    _fold_all(home, spool.pending_names(Path(home.spool_dir)), counts)
    return counts


@contextmanager
def open_history(home: Any, read_only: bool = False) -> Iterator[Any]:
    """Fold the spool, then yield a DuckDB connection to the history for this block only.

    read_only=True skips the fold and shares the hold with other readers; it never migrates,
    so a database that is missing or older is first brought up to date in an exclusive hold.
    """
    if read_only:
        with _read_hold(home) as con:
            yield con
        return
    spool_dir = Path(home.spool_dir)
    counts = {"folded": 0, "duplicates": 0, "quarantined": 0}
    names = spool.pending_names(spool_dir)
    # The backlog beyond one batch folds in holds of its own; the last batch shares ours.
    split = max(0, len(names) - BATCH_RECORDS)
    _fold_all(home, names[:split], counts)
    batch = _read_batch(spool_dir, names[split:])
    try:
        with _hold(home, exclusive=True) as con:
            _fold(con, batch, counts)
            yield con
    finally:
        counts["quarantined"] += _settle(spool_dir, batch)


@contextmanager
def _read_hold(home: Any) -> Iterator[Any]:
    from requiem.history_schema import schema_version

    path = history_path(home)
    if path.exists():
        with _hold(home, exclusive=False) as con:
            version = schema_version(con)
            check_supported(version, str(path))
            if version == SCHEMA_VERSION:
                yield con
                return
    with _hold(home, exclusive=True):
        pass  # creates or migrates the database
    with _hold(home, exclusive=False) as con:
        yield con


def history_status(home: Any) -> dict[str, Any]:
    """What doctor reports: database path, schema version, spool backlog and quarantine size."""
    spool_dir = Path(home.spool_dir)
    path = history_path(home)
    status: dict[str, Any] = {
        "path": str(path),
        "exists": path.exists(),
        "schema_version": None,
        "supported_schema_version": SCHEMA_VERSION,
        "spool_pending": len(spool.pending_names(spool_dir)),
        "quarantined": quarantined_count(home),
    }
    if status["exists"]:
        from requiem.history_schema import schema_version

        with _hold(home, exclusive=False) as con:
            status["schema_version"] = schema_version(con)
    return status


def quarantined_count(home: Any) -> int:
    """How many spool records sit in spool/quarantine/."""
    try:
        return sum(1 for n in os.listdir(Path(home.spool_dir) / QUARANTINE) if n.endswith(".json"))
    except FileNotFoundError:
        return 0


def record_cas_verify(home: Any, report: dict[str, Any]) -> str:
    """Spool a `cas verify` report as a "cas_verify" history record; return its record id."""
    payload = {key: report.get(key) for key in
               ("mode", "objects_total", "objects_checked", "bytes_checked")}
    payload["corrupt"] = list(report.get("corrupt") or [])
    return spool.write_record(Path(home.spool_dir), "cas_verify", payload)
