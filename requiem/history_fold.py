"""Folding spool segments into the history: seal, lock, read with DuckDB, commit, then delete.

Inside an exclusive hold of the history a folder renames each active segment to a sealed name
(new writers start a fresh one), takes flock(LOCK_EX) on every sealed segment it will fold
(waiting out writers still mid-append), and folds them in one transaction. The fast path hands
the segment files straight to DuckDB's read_ndjson with the kind's columns: every record is
parsed once, in parallel, with no Python per record, and a record that is not clean makes the
statement fail (history_schema.checked). Only then, file by file, the careful path splits lines
in Python, classifies each one in DuckDB, folds the good ones and quarantines the rest.
Segments are unlinked only after their transaction commits; folding is idempotent by record id.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from requiem import hashing, spool
from requiem.history_schema import KINDS, checked, insert_statements, line_shape, record_type

MAX_RECORD_BYTES = 16 << 20
LEGACY_BATCH = 65536
_LOCK_WAIT_S = 5.0
_WARNINGS_SHOWN = 20
_LEGACY_PATTERN = r"^\d{4}-\d{2}-\d{2}_([a-z_]+)_[0-9a-f]{64}\.json$"
# read_ndjson takes these as a glob; such a path is read by the careful path instead.
_GLOB_CHARS = frozenset("*?[{")


@dataclass
class Segment:
    """A sealed segment this folder holds LOCK_EX on until it is settled."""

    name: str
    kind: str
    fd: int
    size: int
    torn: bool  # the last byte is not a newline: a writer died mid-line


@dataclass
class _Outcome:
    """What one fold step did: files to delete and bad lines/files to quarantine."""

    done: list[str] = field(default_factory=list)
    bad_lines: list[tuple[str, bytes, str]] = field(default_factory=list)  # (name, bytes, why)
    bad_files: list[tuple[str, str]] = field(default_factory=list)  # legacy (name, why)


def seal_active(spool_dir: Path) -> None:
    """Hand every active segment over to folding: new writers start a fresh one."""
    for name in spool.segment_names(spool_dir):
        kind = spool.segment_kind(name)
        if name.startswith("current.") and kind is not None:
            try:
                os.rename(spool_dir / name, spool_dir / spool.sealed_name(kind))
            except FileNotFoundError:
                pass


def backlog_bytes(spool_dir: Path) -> int:
    """Bytes waiting in segments, plus a nominal 2 KiB per legacy file."""
    total = 2048 * len(spool.legacy_names(spool_dir))
    for name in spool.segment_names(spool_dir):
        try:
            total += os.stat(spool_dir / name).st_size
        except FileNotFoundError:
            continue
    return total


def _lock(spool_dir: Path, name: str) -> Segment | None:
    """LOCK_EX on a sealed segment, waiting out writers mid-append; None if gone or stuck."""
    try:
        fd = os.open(spool_dir / name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    deadline = time.monotonic() + _LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:  # a stopped writer: fold it next time
                os.close(fd)
                return None
            time.sleep(0.001)
    st = os.fstat(fd)
    if st.st_nlink == 0 or st.st_size == 0:
        os.close(fd)
        if st.st_nlink:
            os.unlink(spool_dir / name)  # empty: a writer that failed before its first byte
        return None
    torn = os.pread(fd, 1, st.st_size - 1) != b"\n"
    return Segment(name, str(spool.segment_kind(name)), fd, st.st_size, torn)


def fold_some(con: Any, spool_dir: Path, counts: dict[str, int], limit: int | None) -> bool:
    """Seal, lock and fold sealed segments (up to `limit` bytes; None: all) and legacy files.

    Returns whether anything was taken, so a caller looping over a backlog stops.
    """
    seal_active(spool_dir)
    spool.sweep_dead_temps(spool_dir)
    taken: list[Segment] = []
    size = 0
    for name in spool.segment_names(spool_dir):
        if not name.startswith("folding.") or (limit is not None and taken and size > limit):
            continue
        segment = _lock(spool_dir, name)
        if segment is not None:
            taken.append(segment)
            size += segment.size
    legacy = spool.legacy_names(spool_dir)[:LEGACY_BATCH]
    # Folded rows need no order among themselves (every reader sorts by recorded_at, record_id),
    # and DuckDB inserts in parallel a little faster without keeping it (2-5 % of a 1M fold).
    # A global setting: set back before the caller's queries, outside any transaction.
    con.execute("SET preserve_insertion_order = false")
    try:
        _fold_segments(con, spool_dir, taken, counts)
        if legacy:
            outcome = _Outcome()
            _in_transaction(con, lambda: _fold_legacy(con, spool_dir, legacy, counts, outcome))
            _settle(spool_dir, outcome, counts)
    finally:
        con.execute("RESET preserve_insertion_order")
        for segment in taken:
            os.close(segment.fd)
    return bool(taken or legacy)


def _in_transaction(con: Any, work: Any) -> Any:
    con.execute("BEGIN TRANSACTION")
    try:
        result = work()
        con.execute("COMMIT")
        return result
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _fold_segments(con: Any, spool_dir: Path, taken: list[Segment],
                   counts: dict[str, int]) -> None:
    """All clean segments in one transaction; on any bad record, each file on its own."""
    clean = [s for s in taken if not s.torn and s.kind in KINDS
             and not _GLOB_CHARS & set(str(spool_dir))]
    careful = [s for s in taken if s not in clean]
    if clean and _try_fast(con, spool_dir, clean, counts):
        _settle(spool_dir, _Outcome(done=[s.name for s in clean]), counts)
    elif clean:
        careful = taken  # some record is not clean; find it file by file
    for segment in careful:
        outcome = _Outcome(done=[segment.name])
        if segment not in clean or not _try_fast(con, spool_dir, [segment], counts):
            found = {"folded": 0, "duplicates": 0}
            _in_transaction(con, lambda: _careful(con, segment, found, outcome))
            counts["folded"] += found["folded"]
            counts["duplicates"] += found["duplicates"]
        _settle(spool_dir, outcome, counts)


def _try_fast(con: Any, spool_dir: Path, segments: list[Segment],
              counts: dict[str, int]) -> bool:
    """The fast path over segments in one transaction; False (rolled back) on a bad record."""
    import duckdb

    by_kind: dict[str, list[str]] = {}
    for segment in segments:
        by_kind.setdefault(segment.kind, []).append(str(spool_dir / segment.name))
    found = {"folded": 0, "duplicates": 0}
    try:
        _in_transaction(con, lambda: [_fast(con, kind, paths, found)
                                      for kind, paths in by_kind.items()])
    except duckdb.Error:
        return False
    counts["folded"] += found["folded"]
    counts["duplicates"] += found["duplicates"]
    return True


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _insert(con: Any, kind: str, source: str) -> int:
    """Run a kind's insert statements from `source` (record_id, recorded_at, r); rows inserted."""
    staged = len(insert_statements(kind, source)) > 1
    if staged:  # each statement reads its source again: parse once into a temp table
        con.execute(f"CREATE OR REPLACE TEMP TABLE fold_staged AS {source}")
        source = "SELECT * FROM fold_staged"
    inserted = 0
    for statement in insert_statements(kind, source):
        inserted = con.execute(statement).fetchall()[0][0]  # the last fills the kind's table
    if staged:
        con.execute("DROP TABLE fold_staged")
    return inserted


def _fast(con: Any, kind: str, paths: list[str], found: dict[str, int]) -> None:
    """Fold whole segment files of one kind with read_ndjson; fails if any record is not clean."""
    # nextval in a filter counts the records read, duplicates included, at no extra pass.
    con.execute("CREATE OR REPLACE TEMP SEQUENCE fold_lines")
    files = "[" + ", ".join(map(_quoted, paths)) + "]"
    source = (f"SELECT id, record AS r FROM read_ndjson({files}, columns = {{'id': 'VARCHAR', "
              f"'record': {_quoted(record_type(kind))}}}, maximum_object_size = "
              f"{MAX_RECORD_BYTES}) WHERE nextval('fold_lines') > 0")
    inserted = _insert(con, kind, checked(kind, source))
    found["folded"] += inserted
    found["duplicates"] += _records_read(con) - inserted
    con.execute("DROP SEQUENCE fold_lines")


def _records_read(con: Any) -> int:
    # One more nextval (not currval, which fails, aborting the transaction, if none ran).
    return int(con.execute("SELECT nextval('fold_lines') - 1").fetchall()[0][0])


def _decoded(line: bytes) -> str | None:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _careful(con: Any, segment: Segment, found: dict[str, int], outcome: _Outcome) -> None:
    """Fold one segment line by line: classify every line, fold the good, keep the bad."""
    data = b"".join(_read_all(segment.fd, segment.size))
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a line whose writer died
    labelled = []
    for n, line in enumerate(lines, 1):
        cut = _whole_record_after_fragment(line)
        if cut:
            # A writer killed mid-append left a fragment, and the next writer's whole line
            # followed it on the same line: keep the record, quarantine only the fragment.
            outcome.bad_lines.append((f"{segment.name}.line{n}.fragment", line[:cut],
                                      "torn fragment (its writer died mid-append)"))
            line = line[cut:]
        if line:
            labelled.append((f"{segment.name}.line{n}", line))
    if tail:
        outcome.bad_lines.append((f"{segment.name}.line{len(lines) + 1}", tail,
                                  "torn last line (its writer died mid-append)"))
    if segment.kind not in KINDS:
        outcome.bad_lines += [(label, line, f"unknown record kind {segment.kind}")
                              for label, line in labelled]
        return
    good = _classify(con, segment.kind, labelled, outcome.bad_lines)
    _fold_lines(con, segment.kind, good, found)


def _whole_record(line: bytes) -> bool:
    """Whether a line is one whole spool record: its id is BLAKE3 of its record bytes."""
    parts = spool.split_line(line)
    return parts is not None and hashing.hash_bytes(parts[1]) == parts[0]


def _whole_record_after_fragment(line: bytes) -> int:
    """Where a whole record starts after a torn fragment on the same line; 0 if it does not.

    The line prefix can also occur inside a record (a nested object whose first key is "id",
    such as an output named "id"), so a cut is taken only when the line as a whole is not a
    record and what follows the cut is one.
    """
    cut = line.find(spool.LINE_PREFIX, 1)
    if cut < 0 or _whole_record(line):
        return 0
    while cut > 0:
        if _whole_record(line[cut:]):
            return cut
        cut = line.find(spool.LINE_PREFIX, cut + 1)
    return 0


def _read_all(fd: int, size: int) -> list[bytes]:
    parts, offset = [], 0
    while offset < size:
        part = os.pread(fd, min(size - offset, 1 << 30), offset)
        if not part:
            break
        parts.append(part)
        offset += len(part)
    return parts


def _classify(con: Any, kind: str, labelled: list[tuple[str, bytes]],
              bad: list[tuple[str, bytes, str]]) -> list[str]:
    """The lines that are clean records of `kind`; the others go to `bad` with a reason."""
    import pyarrow as pa

    texts: list[str] = []
    kept: list[tuple[str, bytes]] = []
    for label, line in labelled:
        text = _decoded(line) if len(line) <= MAX_RECORD_BYTES else None
        if text is None:
            why = (f"larger than {MAX_RECORD_BYTES} bytes" if len(line) > MAX_RECORD_BYTES
                   else "not UTF-8 (corrupt)")
            bad.append((label, line, why))
            continue
        texts.append(text)
        kept.append((label, line))
    if not texts:
        return []
    con.register("fold_lines_in", pa.table({"line": pa.array(texts, pa.string())}))
    try:
        problems = con.execute(f"""
            SELECT CASE WHEN NOT json_valid(line) THEN 'not JSON (truncated or corrupt)'
                        WHEN NOT coalesce(length(e[1]) = 64, false)
                          THEN 'no record id'
                        WHEN e[2] IS DISTINCT FROM '{kind}'
                             OR e[3] IS DISTINCT FROM '{spool.RECORD_SCHEMA}'
                             OR TRY_CAST(e[4] AS TIMESTAMP) IS NULL
                          THEN 'wrong schema: not a schema-{spool.RECORD_SCHEMA} "{kind}" '
                               || 'record with a recorded_at' END
            FROM (SELECT line, CASE WHEN json_valid(line) THEN json_extract_string(line,
                    ['$.id', '$.record.kind', '$.record.schema', '$.record.recorded_at']) END
                    AS e FROM fold_lines_in)""").fetchall()
    finally:
        con.unregister("fold_lines_in")
    good = []
    for (problem,), text, (label, line) in zip(problems, texts, kept):
        if problem is None:
            good.append(text)
        else:
            bad.append((label, line, problem))
    return good


def _fold_lines(con: Any, kind: str, good: list[str], found: dict[str, int]) -> None:
    """Fold clean spool lines of one kind (held in Python) through json_transform."""
    import pyarrow as pa

    if not good:
        return
    con.register("fold_lines_in", pa.table({"line": pa.array(good, pa.string())}))
    try:
        source = (f"SELECT j.id AS id, j.record AS r FROM (SELECT json_transform(line, "
                  f"{_quoted(line_shape(kind))}) AS j FROM fold_lines_in)")
        inserted = _insert(con, kind, checked(kind, source))
        found["folded"] += inserted
        found["duplicates"] += len(good) - inserted
    finally:
        con.unregister("fold_lines_in")


def _fold_legacy(con: Any, spool_dir: Path, names: list[str], counts: dict[str, int],
                 outcome: _Outcome) -> None:
    """Fold one-record-per-file spool files: each body becomes a spool line, id from its name."""
    import re

    by_kind: dict[str, list[tuple[str, bytes]]] = {}
    for name in names:
        try:
            body = (spool_dir / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            outcome.bad_files.append((name, f"cannot read: {exc.strerror}"))
            continue
        match = re.match(_LEGACY_PATTERN, name)
        if not match:
            outcome.bad_files.append((name, "unrecognised spool file name"))
        elif match.group(1) not in KINDS:
            outcome.bad_files.append((name, f"unknown record kind {match.group(1)}"))
        else:
            line = spool.LINE_PREFIX + name[-69:-5].encode() + b'","record":' + body + b"}"
            by_kind.setdefault(match.group(1), []).append((name, line))
    found = {"folded": 0, "duplicates": 0}
    for kind, labelled in by_kind.items():
        bad: list[tuple[str, bytes, str]] = []
        _fold_lines(con, kind, _classify(con, kind, labelled, bad), found)
        outcome.bad_files += [(name, why) for name, _, why in bad]
        bad_names = {name for name, _, _ in bad}
        outcome.done += [name for name, _ in labelled if name not in bad_names]
    counts["folded"] += found["folded"]
    counts["duplicates"] += found["duplicates"]


def _settle(spool_dir: Path, outcome: _Outcome, counts: dict[str, int]) -> None:
    """After the commit: keep the bad in the quarantine, then delete what was folded."""
    quarantine = spool_dir / spool.QUARANTINE
    moved = []
    if outcome.bad_lines or outcome.bad_files:
        quarantine.mkdir(exist_ok=True)
    for label, line, why in outcome.bad_lines:
        # Named after its segment and line: folding the segment again rewrites the same file.
        with open(quarantine / label, "wb") as handle:
            handle.write(line)
            os.fsync(handle.fileno())
        moved.append((label, why))
    for name, why in outcome.bad_files:
        try:
            os.rename(spool_dir / name, quarantine / name)
        except FileNotFoundError:
            continue
        moved.append((name, why))
    if moved:
        spool._fsync_dir(quarantine)
    for name in outcome.done:
        try:
            os.unlink(spool_dir / name)
        except FileNotFoundError:
            pass
    counts["quarantined"] += len(moved)
    for name, why in moved[:_WARNINGS_SHOWN]:
        sys.stderr.write(f"requiem: warning: quarantined spool record {name}: {why} "
                         f"(kept in {quarantine})\n")
    if len(moved) > _WARNINGS_SHOWN:
        sys.stderr.write(f"requiem: warning: {len(moved) - _WARNINGS_SHOWN} more spool records "
                         f"quarantined in {quarantine}\n")
