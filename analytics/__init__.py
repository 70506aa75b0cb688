"""Polars analytics over the Requiem history: every number the TUI shows, reusable in notebooks.

    from requiem import analytics

    with analytics.read_history(".requiem") as con:      # folds the spool, holds read-only
        rates = analytics.mismatch_rates(con, "1h")
        slow = analytics.latency_percentiles(con)
    stats = analytics.cas_stats(analytics.cas_objects(".requiem"))

Functions that query take the connection `read_history` yields; keep the block short (other
readers share it, writers wait) and work on the frames after it.
"""

from requiem.analytics.cas import (
    CasInventory,
    cas_objects,
    cas_report,
    cas_stats,
    gc_candidates,
    last_gc,
    last_verify,
)
from requiem.analytics.detail import Content, ExecutionDetail, execution_detail
from requiem.analytics.durations import auto_window, parse_duration
from requiem.analytics.executions import (
    drift,
    execution_outcomes,
    execution_record,
    latency_percentiles,
    recent_executions,
)
from requiem.analytics.health import doctor_findings, engine_policy, host_facts
from requiem.analytics.mismatches import (
    comparison_totals,
    mismatch_rates,
    mismatch_summary,
    recent_mismatches,
    series_window,
)
from requiem.analytics.overview import Probes, Snapshot, findings, snapshot, utc_now
from requiem.analytics.source import as_home, read_history

__all__ = [
    "CasInventory", "Content", "ExecutionDetail", "Probes", "Snapshot", "as_home", "auto_window",
    "cas_objects", "cas_report", "cas_stats", "comparison_totals", "doctor_findings", "drift",
    "engine_policy", "execution_detail", "execution_outcomes", "execution_record", "findings",
    "gc_candidates", "host_facts", "last_gc", "last_verify", "latency_percentiles",
    "mismatch_rates", "mismatch_summary", "parse_duration", "read_history", "recent_executions",
    "recent_mismatches", "series_window", "snapshot", "utc_now",
]
