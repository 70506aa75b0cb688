"""Executions: the newest runs, outcome counts, latency percentiles and drift."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Sequence

import polars as pl

from requiem.analytics.durations import Duration, parse_duration
from requiem.analytics.source import first_row, frame

OUTCOMES = ("ok", "failed", "timeout", "refused")
# A run that did not exit 0 either never started (refused), ran out of time, or failed.
OUTCOME_SQL = """CASE WHEN ok THEN 'ok' WHEN termination_reason = 'refused' THEN 'refused'
  WHEN termination_reason = 'timeout' THEN 'timeout' ELSE 'failed' END"""
# What the `/` filter of recent_executions searches: text anywhere in these (any case)...
TEXT_COLUMNS = ("command", "engine", "request_id", "error_code", "termination_reason")
# ...and, for a hex needle, the start of these (a digest is found by its first characters).
DIGEST_COLUMNS = ("record_id", "request_digest", "result_digest")


def _filter_clause(text: str | None) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of a `/` filter; the text is data, never SQL."""
    needle = (text or "").strip().lower()
    if not needle:
        return "", []
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", needle) + "%"
    tests = [f"{column} ILIKE ? ESCAPE '\\'" for column in TEXT_COLUMNS]
    params: list[Any] = [pattern] * len(TEXT_COLUMNS)
    tests.append(f"contains({OUTCOME_SQL}, ?)")
    params.append(needle)
    if re.fullmatch(r"[0-9a-f]+", needle):
        tests += [f"starts_with({column}, ?)" for column in DIGEST_COLUMNS]
        params += [needle] * len(DIGEST_COLUMNS)
    return f"WHERE {' OR '.join(tests)}", params


def recent_executions(con: Any, limit: int = 200, filter: str | None = None) -> pl.DataFrame:
    """The newest `limit` executions, newest first; `filter` keeps only the matching ones.

    A filter matches text anywhere in the command, engine, request id, error code or
    termination reason (any case), the outcome, or the first characters of a digest; it
    searches the whole history, not just the newest rows.
    """
    where, params = _filter_clause(filter)
    return frame(con, f"""
        SELECT record_id, recorded_at, start_timestamp, engine, command, {OUTCOME_SQL} AS outcome,
               exit_code, error_code, termination_reason, duration_ms, dual_run, request_id,
               request_digest, result_digest
        FROM executions {where}
        ORDER BY recorded_at DESC, record_id
        LIMIT ?""", [*params, limit])


def execution_outcomes(con: Any) -> dict[str, int]:
    """How many executions the history holds, by outcome, and how many were part of a dual run."""
    counts = ", ".join(f"count(*) FILTER (WHERE {OUTCOME_SQL} = '{o}') AS {o}" for o in OUTCOMES)
    row = first_row(con, f"SELECT count(*) AS total, {counts}, "
                         "count(*) FILTER (WHERE dual_run) AS dual_run FROM executions")
    return {key: int(value or 0) for key, value in (row or {}).items()}


def latency_percentiles(con: Any, quantiles: Sequence[float] = (0.5, 0.9, 0.99),
                        window: Duration | None = None) -> pl.DataFrame:
    """Run time percentiles (ms) for all runs (engine "all") and per engine; refusals excluded.

    `window` keeps only runs recorded within it of the newest one (the current latency, and
    cheap on a long history: older row groups are skipped); None takes the whole history.
    """
    names = [f"p{round(q * 100):g}_ms" for q in quantiles]
    picks = ", ".join(f"q[{i + 1}] AS {name}" for i, name in enumerate(names))
    params: list[Any] = [list(quantiles)]
    recent = ""
    if window is not None:
        recent = ("AND recorded_at >= (SELECT max(recorded_at) FROM executions) "
                  "- to_microseconds(?::BIGINT)")
        params.append(int(parse_duration(window) / timedelta(microseconds=1)))
    return frame(con, f"""
        SELECT coalesce(engine, 'all') AS engine, runs, {picks}, max_ms
        FROM (SELECT engine, count(*) AS runs, quantile_cont(duration_ms, ?) AS q,
                     max(duration_ms) AS max_ms, GROUPING(engine) AS overall
              FROM executions
              WHERE termination_reason IS DISTINCT FROM 'refused' AND duration_ms IS NOT NULL
                {recent}
              GROUP BY GROUPING SETS ((), (engine)))
        ORDER BY overall DESC, runs DESC, engine""", params)


def drift(con: Any, limit: int | None = 50) -> pl.DataFrame:
    """Requests that gave more than one result: request_digest, command, runs, results, when."""
    return frame(con, f"""
        SELECT request_digest, any_value(command) AS command, count(*) AS runs,
               count(DISTINCT result_digest) AS results, min(recorded_at) AS first_seen,
               max(recorded_at) AS last_seen
        FROM executions
        WHERE request_digest IS NOT NULL AND result_digest IS NOT NULL
        GROUP BY request_digest
        HAVING count(DISTINCT result_digest) > 1
        ORDER BY results DESC, runs DESC, request_digest
        {'LIMIT ?' if limit is not None else ''}""", [limit] if limit is not None else None)


def execution_record(con: Any, record_id: str) -> dict[str, Any] | None:
    """Every column of one execution row, by its record id."""
    return first_row(con, f"SELECT *, {OUTCOME_SQL} AS outcome FROM executions "
                          "WHERE record_id = ?", [record_id])
