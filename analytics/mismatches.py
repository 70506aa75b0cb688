"""Dual-run comparisons: how often each mismatch category occurs, overall and over time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import polars as pl

from requiem.analytics.durations import Duration, auto_window, parse_duration
from requiem.analytics.source import first_row, frame
from requiem.dual import SEVERITY

SEVERITY_ORDER = ("critical", "high", "medium")


def _categories(seen: list[str]) -> pl.DataFrame:
    """Every known category in the cutover report's order, then any unknown ones seen."""
    names = list(SEVERITY) + sorted(set(seen) - set(SEVERITY))
    return pl.DataFrame({"category": names,
                         "severity": [SEVERITY.get(name, "unknown") for name in names]})


def comparison_totals(con: Any) -> dict[str, Any]:
    """Comparisons recorded, how many mismatched (and at which worst severity), and when."""
    worst = ", ".join(f"count(*) FILTER (WHERE max_severity = '{s}') AS {s}"
                      for s in SEVERITY_ORDER)
    row = first_row(con, f"""
        SELECT count(*) AS comparisons, count(*) FILTER (WHERE mismatch) AS mismatching, {worst},
               min(recorded_at) AS first_at, max(recorded_at) AS last_at
        FROM dual_runs""") or {}
    comparisons = int(row.get("comparisons") or 0)
    row["rate"] = (row.get("mismatching") or 0) / comparisons if comparisons else None
    return row


def mismatch_summary(con: Any) -> pl.DataFrame:
    """Per category, over the whole history: severity, mismatches, comparisons, rate, last seen."""
    counts = frame(con, """
        SELECT category, count(*) AS mismatches, max(recorded_at) AS last_seen
        FROM dual_run_mismatches GROUP BY category""")
    comparisons = int((first_row(con, "SELECT count(*) AS n FROM dual_runs") or {})["n"])
    return (_categories(counts["category"].to_list())
            .join(counts, on="category", how="left")
            .with_columns(pl.col("mismatches").fill_null(0),
                          pl.lit(comparisons, pl.Int64).alias("comparisons"))
            .with_columns(pl.when(pl.col("comparisons") > 0)
                          .then(pl.col("mismatches") / pl.col("comparisons"))
                          .alias("rate"))
            .select("category", "severity", "mismatches", "comparisons", "rate", "last_seen"))


def mismatch_rates(con: Any, window: Duration = "1h", buckets: int | None = None) -> pl.DataFrame:
    """Mismatch rate per category per time bucket of width `window` (every bucket, zeros too).

    Columns: bucket (start), category, severity, comparisons (in the bucket), mismatches, rate
    (null where the bucket had no comparison). `buckets` keeps only the newest N buckets.
    """
    width = parse_duration(window)
    micros = [int(width / timedelta(microseconds=1))]
    bucket = "time_bucket(to_microseconds(?::BIGINT), recorded_at) AS bucket"
    per_bucket = frame(con, f"SELECT {bucket}, count(*) AS comparisons FROM dual_runs "
                            "GROUP BY bucket", micros)
    per_category = frame(con, f"SELECT {bucket}, category, count(*) AS mismatches "
                              "FROM dual_run_mismatches GROUP BY ALL", micros)
    categories = _categories(per_category["category"].to_list())
    schema = {"bucket": pl.Datetime("us"), "category": pl.String, "severity": pl.String,
              "comparisons": pl.Int64, "mismatches": pl.Int64, "rate": pl.Float64}
    if per_bucket.is_empty():
        return pl.DataFrame(schema=schema)
    last = per_bucket["bucket"].max()
    first = per_bucket["bucket"].min()
    if buckets is not None:
        first = max(first, last - width * (buckets - 1))
    edges = pl.DataFrame({"bucket": pl.datetime_range(first, last, width, eager=True)})
    return (edges.join(categories, how="cross")
            .join(per_bucket, on="bucket", how="left")
            .join(per_category, on=["bucket", "category"], how="left")
            .with_columns(pl.col("comparisons").fill_null(0).cast(pl.Int64),
                          pl.col("mismatches").fill_null(0).cast(pl.Int64))
            .with_columns(pl.when(pl.col("comparisons") > 0)
                          .then(pl.col("mismatches") / pl.col("comparisons"))
                          .alias("rate"))
            .select(list(schema))
            .cast(schema)
            .sort("bucket", "category"))


def series_window(con: Any, buckets: int = 30) -> timedelta:
    """A round bucket width that shows the whole span of recorded comparisons in `buckets`."""
    row = first_row(con, "SELECT min(recorded_at) AS first, max(recorded_at) AS last "
                         "FROM dual_runs") or {}
    span = row["last"] - row["first"] if row.get("first") is not None else timedelta(0)
    return auto_window(span, buckets)


def recent_mismatches(con: Any, limit: int = 100) -> pl.DataFrame:
    """The newest comparisons that found a difference, with the primary run's record id."""
    return frame(con, """
        WITH recent AS (
            SELECT * FROM dual_runs WHERE mismatch ORDER BY recorded_at DESC, record_id LIMIT ?)
        SELECT d.recorded_at, d.request_id, d.primary_engine, d.secondary_engine, d.max_severity,
               d.categories, any_value(e.record_id) AS primary_record_id
        FROM recent d LEFT JOIN executions e
          ON e.request_id = d.request_id AND e.result_object = d.primary_result_object
        GROUP BY ALL ORDER BY d.recorded_at DESC, d.request_id""", [limit])
