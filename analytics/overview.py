"""The overview: every number one refresh of the TUI shows, gathered in one hold of the history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import polars as pl

from requiem import diagnostics, history
from requiem.analytics.cas import CasInventory, cas_stats, last_gc, last_verify
from requiem.analytics.executions import execution_outcomes, latency_percentiles, recent_executions
from requiem.analytics.health import (
    database_facts,
    doctor_findings,
    engine_policy,
    host_facts,
    spool_facts,
)
from requiem.analytics.mismatches import (
    comparison_totals,
    mismatch_rates,
    mismatch_summary,
    series_window,
)
from requiem.analytics.source import HomeLike, as_home
from requiem.home import Home


# The TUI shows current latency: the last hour of runs before the newest one.
LATENCY_WINDOW = timedelta(hours=1)


def utc_now() -> datetime:
    """Now, as the naive UTC datetime the history's TIMESTAMP columns use."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Probes:
    """Where the clock-, host- and machine-dependent facts come from (tests pass fixed ones)."""

    clock: Callable[[], datetime] = utc_now
    host: Callable[[Path], dict[str, Any]] = host_facts
    health: Callable[[Home], dict[str, Any]] = diagnostics.health
    doctor: Callable[[Home], dict[str, Any]] = diagnostics.doctor


@dataclass(frozen=True)
class Snapshot:
    """Everything one refresh shows; frames are small (bounded) and safe to keep."""

    taken_at: datetime
    elapsed_ms: float
    health: dict[str, Any]
    policy: dict[str, Any]
    spool: dict[str, int]
    database: dict[str, Any]
    host: dict[str, Any]
    outcomes: dict[str, int]
    latency: pl.DataFrame
    executions: pl.DataFrame
    filter: str | None
    comparisons: dict[str, Any]
    mismatches: pl.DataFrame
    window: timedelta
    mismatch_series: pl.DataFrame
    cas: dict[str, Any]
    last_verify: dict[str, Any] | None
    last_gc: dict[str, Any] | None


def snapshot(home: HomeLike, *, limit: int = 200, filter: str | None = None,
             inventory: CasInventory | None = None, probes: Probes | None = None,
             buckets: int = 30, top: int = 10) -> Snapshot:
    """Fold the spool, then gather health, executions, mismatches and CAS facts.

    The database is held (read-only, shared) only for the queries; the CAS walk, host facts
    and health probes happen outside the hold. Pass the same `inventory` on every refresh so
    CAS headers are read once.
    """
    probes = probes or Probes()
    home = as_home(home)
    started = probes.clock()
    health = probes.health(home)
    policy = engine_policy(home)
    spool = spool_facts(home)
    spool["folded"] = history.ingest(home)["folded"]
    objects = (inventory or CasInventory(home.cas_root)).scan()
    with history.open_history(home, read_only=True) as con:
        outcomes = execution_outcomes(con)
        latency = latency_percentiles(con, window=LATENCY_WINDOW)
        executions = recent_executions(con, limit, filter)
        comparisons = comparison_totals(con)
        mismatches = mismatch_summary(con)
        window = series_window(con, buckets)
        series = mismatch_rates(con, window, buckets)
        verify = last_verify(con)
        gc = last_gc(con)
    database = database_facts(home)
    host = probes.host(home.root)
    finished = probes.clock()
    return Snapshot(
        taken_at=finished, elapsed_ms=(finished - started).total_seconds() * 1000,
        health=health, policy=policy, spool=spool, database=database, host=host,
        outcomes=outcomes, latency=latency, executions=executions, filter=filter,
        comparisons=comparisons, mismatches=mismatches, window=window, mismatch_series=series,
        cas=cas_stats(objects, top), last_verify=verify, last_gc=gc,
    )


def findings(home: HomeLike, probes: Probes | None = None) -> list[dict[str, Any]]:
    """The doctor's findings for a home, each with the command that fixes or investigates it."""
    return doctor_findings((probes or Probes()).doctor(as_home(home)))
