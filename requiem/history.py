"""The history: spool records folded into DuckDB inside short holds serialised by a lock file.

DuckDB lets one process hold a database file read-write and nobody read beside it, so every
consumer takes `<history>.lock` (flock: exclusive to fold or write, shared to read), opens the
database, works, and closes it. A holder that waits longer than `history.lock_timeout_s` gets
history_busy, never a DuckDB lock error. Inside the exclusive hold the spool's segments are
sealed, read by DuckDB and folded in one transaction per batch (anti-joined on record_id so a
record folds once), and deleted only after that transaction commits (requiem.history_fold).
Tables and columns: requiem.history_schema.
"""

from __future__ import annotations

import fcntl
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from requiem import history_fold, spool
from requiem.errors import HISTORY_BUSY, RequiemError
from requiem.history_schema import SCHEMA_VERSION, check_supported, migrate

__all__ = ["SCHEMA_VERSION", "history_status", "ingest", "open_history", "record_cas_verify"]

# Bytes of sealed segments folded per hold (~1.3M records of ~1.5 KB, ~6 s here). Each extra
# hold re-reads every record_id for the anti join and rewrites row groups at close: 1M records
# folded in 3 holds took 8.8-10.2 s, in one 5.4 s. Bigger backlogs still take turns.
BATCH_BYTES = 2 << 30
# Statically linked extensions (json, parquet) suffice; never reach for the network. A fold
# writes each row group as soon as it is full instead of buffering five per thread, so it
# compresses while the scan goes on: a 1M-record fold peaks at ~0.55 GB instead of ~1.5 GB and
# takes ~8 % less time. (A global setting: every connection passes the same config, as DuckDB
# requires of two open on one file.)
_DUCKDB_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                  "write_buffer_row_group_count": 1}


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
            if exclusive and migrate(con, str(path)) < SCHEMA_VERSION:
                # Tables checkpointed before a first big fold let its commit skip a ~1 s
                # rewrite at close (measured with 336k records into a fresh database).
                con.execute("CHECKPOINT")
            yield con
        finally:
            con.close()
    finally:
        os.close(lock_fd)


def _fold_backlog(home: Any, counts: dict[str, int]) -> None:
    """Fold the backlog beyond one batch, each batch in a hold of its own so others get turns."""
    spool_dir = Path(home.spool_dir)
    # Bounded by the backlog seen now, so writers faster than the fold cannot keep us here.
    for _ in range(history_fold.backlog_bytes(spool_dir) // BATCH_BYTES + 1):
        if history_fold.backlog_bytes(spool_dir) <= BATCH_BYTES:
            return
        with _hold(home, exclusive=True) as con:
            if not history_fold.fold_some(con, spool_dir, counts, BATCH_BYTES):
                return  # only segments a stuck writer still holds: leave them for later


def ingest(home: Any) -> dict[str, int]:
    """Fold every spool record present now into the history; return the counts.

    `folded` records were inserted, `duplicates` were already there (a fold interrupted after
    its commit), `quarantined` could not be read as records and went to spool/quarantine/.
    """
    counts = {"folded": 0, "duplicates": 0, "quarantined": 0}
    _fold_backlog(home, counts)
    with _hold(home, exclusive=True) as con:
        history_fold.fold_some(con, Path(home.spool_dir), counts, None)
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
    counts = {"folded": 0, "duplicates": 0, "quarantined": 0}
    _fold_backlog(home, counts)
    with _hold(home, exclusive=True) as con:  # the last batch shares the caller's hold
        history_fold.fold_some(con, Path(home.spool_dir), counts, None)
        yield con


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
        "spool_pending": spool.pending_count(spool_dir),
        "quarantined": quarantined_count(home),
    }
    if status["exists"]:
        from requiem.history_schema import schema_version

        with _hold(home, exclusive=False) as con:
            status["schema_version"] = schema_version(con)
    return status


def quarantined_count(home: Any) -> int:
    """How many spool records sit in spool/quarantine/."""
    return spool.quarantined_count(Path(home.spool_dir))


def record_cas_verify(home: Any, report: dict[str, Any]) -> str:
    """Spool a `cas verify` report as a "cas_verify" history record; return its record id."""
    payload = {key: report.get(key) for key in
               ("mode", "objects_total", "objects_checked", "bytes_checked")}
    payload["corrupt"] = list(report.get("corrupt") or [])
    return spool.write_record(Path(home.spool_dir), "cas_verify", payload)
