"""The spool: durable history records appended as lines to segment files, waiting to be folded.

Layout of `<home>/spool/` (one active segment per record kind, so the fold reads a segment with
that kind's columns and parses every record once):

- `current.<kind>.jsonl`: the active segment writers append to.
- `folding.<kind>.<time_ns>.<pid>.<hex>.jsonl`: a sealed segment, handed off by a folder (or
  by a writer once the active one passes SEGMENT_BYTES); only folders touch it from then on.
- `<date>_<kind>_<id>.json`: one record per file, as Requiem before segments wrote them.
- `quarantine/`: what could not be folded.

A line is `{"id":"<record id>","record":<record>}` + newline, where <record> is the record as
compact JSON with sorted keys (`json_text.compact_bytes`: each record is written once, so its
floats may be in orjson's form) and the record id is BLAKE3 of exactly those bytes:
the fold reads the id instead of hashing, and `split_line` + `hashing.hash_bytes` re-verify it.

Writer protocol: open the active segment with O_APPEND, flock(LOCK_SH), check the descriptor
still names the file at the path (a folder may have renamed it away), append the whole lines in
one write, fdatasync, unlock. A folder renames the active segment away and then takes LOCK_EX on
it, which waits out any writer still mid-append; after that nobody can add to it.
"""

from __future__ import annotations

import fcntl
import os
import time

from requiem import hashing, json_text
from requiem.cas_writer import write_all
from requiem.clock import utc_now_iso

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any, Iterator, Sequence

    StrPath = str | os.PathLike[str]  # a spool directory as a string or a Path

RECORD_SCHEMA = 1
RECORD_KINDS = ("execution", "dual_run", "cas_verify", "cas_gc", "cas_put", "bench")
# Past this size a writer seals the active segment, so one fold batch stays a bounded hold.
SEGMENT_BYTES = 64 << 20
QUARANTINE = "quarantine"
LINE_PREFIX = b'{"id":"'
_RECORD_KEY = b'","record":'
_BODY_START = len(LINE_PREFIX) + hashing.DIGEST_HEX_LENGTH + len(_RECORD_KEY)


def active_name(kind: str) -> str:
    """The file name of a kind's active segment."""
    return f"current.{kind}.jsonl"


def sealed_name(kind: str) -> str:
    """A fresh, unique name for a sealed segment of a kind (sorts by sealing time)."""
    return f"folding.{kind}.{time.time_ns()}.{os.getpid()}.{os.urandom(4).hex()}.jsonl"


def segment_kind(name: str) -> str | None:
    """The record kind a segment file name declares, or None when it is no segment."""
    parts = name.split(".")
    if name.endswith(".jsonl") and parts[0] in ("current", "folding") and len(parts) >= 3:
        return parts[1]
    return None


def encode(kind: str, payload: dict[str, Any]) -> tuple[str, bytes]:
    """A record of `kind` as (record id, spool line)."""
    body = _body(kind, payload)
    record_id = hashing.hash_bytes(body)
    return record_id, line_of(record_id, body)


def _body(kind: str, payload: dict[str, Any]) -> bytes:
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    record = {"kind": kind, "schema": RECORD_SCHEMA, "recorded_at": utc_now_iso(), **payload}
    body = json_text.compact_bytes(record, errors="surrogatepass")
    if b"\n" in body:  # JSON escapes control characters; a newline would split the record
        raise ValueError("a record's JSON contains a raw newline")
    return body


class Unfilled:
    """A record encoded before one of its fields, a digest, is known: filled in, it is a line.

    A group commit encodes its runs' records as they come, in the time a batch waits for its
    next command, and names the pack of their result documents only at the flush: encoded
    there, in the flusher thread, they held the GIL against the runs (~20 us a run).
    """

    __slots__ = ("_body", "_at")

    # Stands in for the digest while it is unknown: random, so no request can hold it.
    _placeholder = os.urandom(32).hex()

    def __init__(self, kind: str, payload: dict[str, Any], field: str) -> None:
        placeholder = self._placeholder
        while True:
            body = _body(kind, {**payload, field: placeholder})
            mark = placeholder.encode()
            at = body.find(mark)
            if at >= 0 and body.find(mark, at + 1) < 0:
                break
            placeholder = os.urandom(32).hex()  # it is elsewhere in the record too
        self._body, self._at = body, at

    def filled(self, digest: str) -> bytes:
        """The record's spool line, `digest` (64 hex digits) in the field."""
        if len(digest) != len(self._placeholder) or digest.strip("0123456789abcdef"):
            raise ValueError(f"not a digest: {digest!r}")
        at = self._at
        body = b"%s%s%s" % (self._body[:at], digest.encode(), self._body[at + len(digest):])
        return line_of(hashing.hash_bytes(body), body)


def line_of(record_id: str, body: bytes) -> bytes:
    """The spool line holding a record's bytes and its record id."""
    return b"".join((LINE_PREFIX, record_id.encode(), _RECORD_KEY, body, b"}\n"))


def split_line(line: bytes) -> tuple[str, bytes] | None:
    """(record id, record bytes) of a well-formed spool line, else None."""
    line = line.rstrip(b"\n")
    if not (line.startswith(LINE_PREFIX) and line.endswith(b"}")
            and line[_BODY_START - len(_RECORD_KEY):_BODY_START] == _RECORD_KEY):
        return None
    return line[len(LINE_PREFIX):_BODY_START - len(_RECORD_KEY)].decode("ascii", "replace"), \
        line[_BODY_START:-1]


def write_record(spool_dir: StrPath, kind: str, payload: dict[str, Any]) -> str:
    """Append one record to the spool, durable when this returns; return its record id."""
    return write_records(spool_dir, [(kind, payload)])[0]


def write_records(spool_dir: StrPath, records: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Append records (kind, payload) durably; one write and one fdatasync per kind among them.

    Producers never open DuckDB: a record costs a share of one append and one fdatasync.
    """
    encoded = [encode(kind, payload) for kind, payload in records]
    append_lines(spool_dir, [(kind, line) for (kind, _), (_, line) in zip(records, encoded)])
    return [record_id for record_id, _ in encoded]


def append_lines(spool_dir: StrPath, lines: Sequence[tuple[str, bytes]]) -> None:
    """Append encoded records (kind, spool line) durably; one write and one fdatasync per kind."""
    by_kind: dict[str, list[bytes]] = {}
    for kind, line in lines:
        by_kind.setdefault(kind, []).append(line)
    spool_dir = os.fspath(spool_dir)
    for kind, kind_lines in by_kind.items():
        _append(spool_dir, kind, b"".join(kind_lines))


def _is_current(path: StrPath, st: os.stat_result) -> bool:
    """Whether the descriptor's file (st) is still the one linked at path."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    return st.st_nlink > 0 and (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev)


def _lock(fd: int, path: StrPath, mode: int) -> bool:
    """flock the active segment; False when it is no longer the one at path (sealed).

    A folder holds LOCK_EX on a sealed segment for a whole fold, so a writer that opened it
    just before the seal must not wait for that: it sees the seal and starts over.
    """
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        if not _is_current(path, os.fstat(fd)):
            return False
        fcntl.flock(fd, mode)  # another writer (repairing a torn line): microseconds
    return _is_current(path, os.fstat(fd))


def _append(spool_dir: StrPath, kind: str, data: bytes) -> None:
    path = os.path.join(spool_dir, active_name(kind))
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)  # read: the tail check
        except FileNotFoundError:
            if _create(spool_dir, path, data):
                return
            continue
        try:
            if not _lock(fd, path, fcntl.LOCK_SH):
                continue  # a folder sealed it between our open and our lock
            st = os.fstat(fd)
            prefix = b""
            if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                # A writer died mid-line, or one is still writing a long line: decide alone.
                if not _lock(fd, path, fcntl.LOCK_EX):
                    continue
                st = os.fstat(fd)
                if st.st_size and os.pread(fd, 1, st.st_size - 1) != b"\n":
                    prefix = b"\n"  # end the torn line so ours is not glued onto it
            write_all(fd, prefix + data)
            os.fdatasync(fd)
            if st.st_size + len(data) >= SEGMENT_BYTES and _is_current(path, os.fstat(fd)):
                try:  # sealing any active segment is always safe, so losing this race is too
                    os.rename(path, os.path.join(spool_dir, sealed_name(kind)))
                except FileNotFoundError:
                    pass
            return
        finally:
            os.close(fd)  # also drops the flock


def _create(spool_dir: StrPath, path: StrPath, data: bytes) -> bool:
    """Make the active segment holding data; False when another writer made it first.

    The segment is written and locked under a private name before it is linked in, so no
    other writer can append (and return) before its directory entry is durable.
    """
    os.makedirs(spool_dir, exist_ok=True)
    temp = os.path.join(spool_dir, f".{os.getpid()}.{os.urandom(6).hex()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        write_all(fd, data)
        os.fdatasync(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        _fsync_dir(spool_dir)
        return True
    finally:
        os.unlink(temp)
        os.close(fd)


def sweep_dead_temps(spool_dir: StrPath) -> int:
    """Remove the private temp files of writers that died creating a segment; return how many."""
    from requiem.cas import pid_alive

    removed = 0
    try:
        names = os.listdir(spool_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        parts = name.split(".")  # "", pid, hex, "tmp": as _create names them
        if len(parts) != 4 or parts[0] or parts[3] != "tmp" or not parts[1].isdigit():
            continue
        if pid_alive(int(parts[1])):
            continue
        try:
            os.unlink(os.path.join(spool_dir, name))
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def _fsync_dir(directory: StrPath) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def segment_names(spool_dir: StrPath) -> list[str]:
    """Segment files in the spool, sealed ones first (oldest first), then the active ones."""
    try:
        names = os.listdir(spool_dir)
    except FileNotFoundError:
        return []
    segments = [n for n in names if segment_kind(n) is not None]
    return sorted(segments, key=lambda n: (not n.startswith("folding."), n))


def legacy_names(spool_dir: StrPath) -> list[str]:
    """One-record-per-file spool files left by Requiem before segments, oldest first."""
    try:
        return sorted(n for n in os.listdir(spool_dir) if n.endswith(".json") and n[0] != ".")
    except FileNotFoundError:
        return []


def _lines(path: StrPath) -> Iterator[bytes]:
    try:
        with open(path, "rb") as handle:
            yield from (line for line in handle if line.strip())
    except FileNotFoundError:
        return  # folded meanwhile


def pending_count(spool_dir: StrPath) -> int:
    """How many records wait in the spool (lines of every segment plus legacy files)."""
    count = len(legacy_names(spool_dir))
    for name in segment_names(spool_dir):
        try:
            with open(os.path.join(spool_dir, name), "rb") as handle:
                count += sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
        except FileNotFoundError:
            continue
    return count


def pending_records(spool_dir: StrPath, kind: str | None = None) -> list[dict[str, Any]]:
    """The records waiting in the spool (optionally of one kind), oldest first; unreadable
    lines are skipped (the fold quarantines them)."""
    bodies: list[bytes] = []
    for name in legacy_names(spool_dir):
        try:
            with open(os.path.join(spool_dir, name), "rb") as handle:
                bodies.append(handle.read())
        except FileNotFoundError:
            continue
    for name in segment_names(spool_dir):
        bodies.extend(split[1] for split in map(split_line, _lines(os.path.join(spool_dir, name))) if split)
    records = []
    for body in bodies:
        try:
            record = json_text.loads(body.decode("utf-8", "surrogatepass"))  # as written
        except ValueError:
            continue
        if isinstance(record, dict) and (kind is None or record.get("kind") == kind):
            records.append(record)
    return records


def quarantined_count(spool_dir: StrPath) -> int:
    """How many records (files) sit in spool/quarantine/."""
    try:
        return sum(1 for n in os.listdir(os.path.join(spool_dir, QUARANTINE)) if n[0] != ".")
    except FileNotFoundError:
        return 0
