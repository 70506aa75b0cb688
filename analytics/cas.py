"""The CAS seen as data: its objects, their totals, what GC could reclaim, the last verify and GC."""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from typing import Any, Collection

import polars as pl

from requiem import gc
from requiem.analytics.durations import Duration, parse_duration
from requiem.analytics.source import HomeLike, as_home, first_row, frame
from requiem.cas import Cas, ObjectInfo
from requiem.errors import RequiemError

OBJECT_SCHEMA = {"digest": pl.String, "encoding": pl.String, "original_size": pl.Int64,
                 "stored_size": pl.Int64, "created_at": pl.Datetime("us"), "malformed": pl.String}


def _parse_time(text: str | None) -> datetime | None:
    """A naive UTC datetime from the CAS's ISO 8601 `...Z` timestamps (like the history's)."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).replace(
        tzinfo=None)


class CasInventory:
    """The CAS's objects as a frame; headers already read are kept, since objects are immutable.

    A rescan lists the digests present and reads only the headers of new ones, so a live view
    pays one directory walk per refresh. Content is not checked here: that is `cas verify`.
    Scans may come from several threads (the refresh and a CAS view); they take turns.
    """

    def __init__(self, cas_root: str | os.PathLike[str]) -> None:
        self.cas = Cas(cas_root)
        self._rows: dict[str, tuple[Any, ...]] = {}
        self._lock = threading.Lock()

    def _row(self, digest: str) -> tuple[Any, ...]:
        try:
            info: ObjectInfo = self.cas.info(digest)
        except RequiemError as exc:
            return (digest, None, None, None, None, exc.message)
        return (digest, info.encoding, info.original_size, info.stored_size,
                _parse_time(info.created_at), None)

    def scan(self) -> pl.DataFrame:
        """Every object present now: digest, encoding, sizes, created_at, malformed (reason)."""
        with self._lock:
            present = set(self.cas.list_digests())
            for gone in self._rows.keys() - present:
                del self._rows[gone]
            for digest in present - self._rows.keys():
                self._rows[digest] = self._row(digest)
            rows = list(self._rows.values())
        return pl.DataFrame(rows, schema=OBJECT_SCHEMA, orient="row")


def cas_objects(home: HomeLike) -> pl.DataFrame:
    """Every object in a home's CAS with its metadata (one full scan)."""
    return CasInventory(as_home(home).cas_root).scan()


def cas_stats(objects: pl.DataFrame, top: int = 10) -> dict[str, Any]:
    """Totals as `requiem cas stats` reports them, with the `top` largest objects as a frame."""
    good = objects.filter(pl.col("malformed").is_null())
    original = int(good["original_size"].sum())
    stored = int(good["stored_size"].sum())
    encodings = good.group_by("encoding").len().sort("encoding")
    return {
        "objects": good.height,
        "original_bytes": original,
        "stored_bytes": stored,
        "compression_ratio": round(original / stored, 4) if stored else 1.0,
        "by_encoding": dict(zip(encodings["encoding"], encodings["len"])),
        "malformed": objects.filter(pl.col("malformed").is_not_null()).select(
            "digest", "malformed"),
        "top": good.sort(["original_size", "digest"], descending=[True, False]).head(top),
    }


def gc_candidates(con: Any, objects: pl.DataFrame, grace: Duration = gc.DEFAULT_GRACE,
                  now: datetime | None = None, pinned: Collection[str] = ()) -> pl.DataFrame:
    """Unpinned objects no history row references, created `grace` or more before `now`.

    Largest first, with their age. The roots are those of `requiem cas gc` (the history's
    `referenced_digests` and the pins); its dry run stays the authority before deleting.
    """
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    cutoff = now - parse_duration(grace)
    con.register("cas_inventory", objects.select("digest").to_arrow())
    try:
        unreferenced = frame(con, "SELECT digest FROM cas_inventory "
                                  "ANTI JOIN referenced_digests USING (digest)")
    finally:
        con.unregister("cas_inventory")
    return (objects.join(unreferenced, on="digest", how="semi")
            .filter(~pl.col("digest").is_in(list(pinned)))
            .filter(pl.col("created_at").is_null() | (pl.col("created_at") <= cutoff))
            .with_columns((pl.lit(now) - pl.col("created_at")).dt.total_seconds().alias("age_s"))
            .sort(["stored_size", "digest"], descending=[True, False], nulls_last=True))


def last_verify(con: Any) -> dict[str, Any] | None:
    """The newest `cas verify` record, with its corrupt objects as a list of {digest, reason}."""
    row = first_row(con, "SELECT recorded_at, mode, objects_total, objects_checked, "
                         "bytes_checked, corrupt_count, corrupt FROM cas_verify_runs "
                         "ORDER BY recorded_at DESC LIMIT 1")
    if row is not None:
        row["corrupt"] = json.loads(row["corrupt"]) if row["corrupt"] else []
    return row


def last_gc(con: Any) -> dict[str, Any] | None:
    """The newest `cas gc` record (dry run or execute) with its counts."""
    return first_row(con, "SELECT * EXCLUDE (record_id) FROM cas_gc_runs "
                          "ORDER BY recorded_at DESC LIMIT 1")


def cas_report(home: HomeLike, inventory: CasInventory | None = None, top: int = 50,
               now: datetime | None = None) -> dict[str, Any]:
    """The CAS triage view: totals, largest objects, every unreferenced object, last verify/GC.

    `unreferenced` lists all unpinned objects the history does not reference (grace 0s), with
    `gc_eligible` set on those old enough for `requiem cas gc` at its default grace.
    """
    from requiem import history

    resolved = as_home(home)
    objects = (inventory or CasInventory(resolved.cas_root)).scan()
    grace = parse_duration(gc.DEFAULT_GRACE)
    with history.open_history(resolved, read_only=True) as con:
        unreferenced = gc_candidates(con, objects, "0s", now, gc.pins(resolved))
        verify, collected = last_verify(con), last_gc(con)
    unreferenced = unreferenced.with_columns(
        (pl.col("age_s") >= grace.total_seconds()).alias("gc_eligible"))
    return {**cas_stats(objects, top), "unreferenced": unreferenced, "grace": grace,
            "last_verify": verify, "last_gc": collected}
