"""Prometheus metrics computed from the history, so a cold `requiem metrics` and /metrics agree.

A custom collector folds the spool and queries the history on every collection (one short hold);
nothing is counted in process memory. JSON output is rendered from the same metric families.
"""

from __future__ import annotations

from typing import Any, Iterator

import requiem
from requiem import hashing
from requiem.errors import RequiemError

# Seconds; spans a /bin/true run (~1 ms) to the longest sensible timeout.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0)
SANDBOX_STATES = ("enforced", "partial", "unsupported")

_OUTCOME = """CASE WHEN ok THEN 'ok'
     WHEN termination_reason = 'timeout' THEN 'timeout'
     WHEN termination_reason = 'refused' THEN 'refused'
     WHEN termination_reason IN ('exited', 'signaled') THEN 'failed'
     ELSE 'error' END"""

_EXECUTIONS = f"""
SELECT engine, outcome, count(*), count(duration_ms), coalesce(sum(duration_ms), 0) / 1000.0,
       count(*) FILTER (WHERE queue_full),
       {", ".join(f"count(*) FILTER (WHERE duration_ms <= {b * 1000!r})" for b in DURATION_BUCKETS)}
FROM (SELECT coalesce(engine, 'unknown') AS engine, {_OUTCOME} AS outcome, duration_ms, queue_full
      FROM executions)
GROUP BY ALL ORDER BY ALL
"""

_SANDBOX_TOTALS = """
SELECT capability, state, count(*) FROM (
  SELECT unnest(sandbox_enforced) AS capability, 'enforced' AS state FROM executions
  UNION ALL SELECT unnest(sandbox_partial), 'partial' FROM executions
  UNION ALL SELECT unnest(sandbox_unsupported), 'unsupported' FROM executions)
GROUP BY ALL ORDER BY ALL
"""

# CAS writes an execution made: a digest seen before was a dedup hit. Distinct 64-bit hashes
# count distinct digests (a collision among 10^7 digests has odds ~10^-6) at a third less cost.
# A result document in a batch's pack is no write of its own; the pack is one write. NULLs go
# before hashing: hash(NULL) is a value, and would count as one more distinct digest.
_CAS_WRITES = """
SELECT count(digest), count(DISTINCT hash(digest)) FROM (
  SELECT unnest([stdout_digest, stderr_digest, request_object,
                 CASE WHEN result_pack IS NULL THEN result_object END]) AS digest
  FROM executions
  UNION ALL SELECT unnest(map_values(output_digests)) FROM executions
  UNION ALL SELECT DISTINCT result_pack FROM executions)
WHERE digest IS NOT NULL
"""


def _rows(con: Any, query: str) -> list[tuple[Any, ...]]:
    return con.execute(query).fetchall()


def snapshot(home: Any) -> dict[str, Any]:
    """Every number the metrics expose, read from the history in one hold."""
    from requiem.history import open_history, quarantined_count

    with open_history(home) as con:
        snap = {
            "executions": _rows(con, _EXECUTIONS),
            "sandbox_totals": _rows(con, _SANDBOX_TOTALS),
            "sandbox_latest": _rows(con, "SELECT sandbox_enforced, sandbox_partial, "
                                         "sandbox_unsupported FROM executions "
                                         "ORDER BY recorded_at DESC, record_id LIMIT 1"),
            "cas_writes": _rows(con, _CAS_WRITES)[0],
            "inventory": _rows(con, "SELECT objects_after, original_bytes_after, "
                                    "stored_bytes_after, epoch(recorded_at) FROM cas_gc_runs "
                                    "ORDER BY recorded_at DESC, record_id LIMIT 1"),
            "gc": _rows(con, "SELECT mode, count(*), coalesce(sum(deleted), 0), "
                             "coalesce(sum(deleted_bytes), 0) FROM cas_gc_runs "
                             "GROUP BY ALL ORDER BY ALL"),
            "verify": _rows(con, "SELECT count(*), arg_max(corrupt_count, recorded_at) "
                                 "FROM cas_verify_runs")[0],
            "dual_runs": _rows(con, "SELECT count(*) FILTER (WHERE mismatch), "
                                    "count(*) FILTER (WHERE NOT mismatch) FROM dual_runs")[0],
            "mismatches": _rows(con, "SELECT category, coalesce(severity, 'unknown'), count(*) "
                                     "FROM dual_run_mismatches GROUP BY ALL ORDER BY ALL"),
        }
    snap["quarantined"] = quarantined_count(home)
    return snap


def _build_info(core: Any) -> Any:
    from requiem.history_schema import SCHEMA_VERSION

    facts = hashing.status()
    info = core.GaugeMetricFamily(
        "requiem_build_info", "Versions of this Requiem build (value is always 1).",
        labels=["version", "protocol_version", "contract_version", "cas_format_version",
                "history_schema_version", "hash_primitive", "hash_backend"])
    info.add_metric([requiem.ENGINE_VERSION, requiem.PROTOCOL_VERSION, requiem.CONTRACT_VERSION,
                     requiem.CAS_FORMAT_VERSION, str(SCHEMA_VERSION), facts["hash_primitive"],
                     facts["hash_backend"]], 1)
    return info


def families(snap: dict[str, Any]) -> Iterator[Any]:
    """The metric families of a snapshot, every name requiem_-prefixed."""
    from prometheus_client import core

    yield from _execution_families(core, snap["executions"])
    yield from _cas_families(core, snap)
    yield from _dual_run_families(core, snap)
    yield from _sandbox_families(core, snap)
    quarantined = core.GaugeMetricFamily(
        "requiem_spool_quarantined_records",
        "Spool records that could not be folded and wait in spool/quarantine/.")
    quarantined.add_metric([], snap["quarantined"])
    yield quarantined


def _execution_families(core: Any, rows: list[tuple[Any, ...]]) -> Iterator[Any]:
    total = core.CounterMetricFamily("requiem_executions", "Executions recorded, by engine and "
                                     "outcome (ok, failed, timeout, refused, error).",
                                     labels=["engine", "outcome"])
    failures = core.CounterMetricFamily("requiem_execution_failures",
                                        "Executions that did not succeed.", labels=["engine"])
    timeouts = core.CounterMetricFamily("requiem_execution_timeouts",
                                        "Executions stopped by their timeout.", labels=["engine"])
    queue_full = core.CounterMetricFamily("requiem_execution_queue_full",
                                          "Executions refused because the queue was full.",
                                          labels=["engine"])
    latency = core.HistogramMetricFamily("requiem_execution_duration_seconds",
                                         "Wall-clock duration of executions.", labels=["engine"])
    per_engine: dict[str, dict[str, Any]] = {}
    for engine, outcome, count, timed, seconds, full, *buckets in rows:
        total.add_metric([engine, outcome], count)
        agg = per_engine.setdefault(engine, {"failed": 0, "timeout": 0, "full": 0, "timed": 0,
                                             "seconds": 0.0, "buckets": [0] * len(buckets)})
        agg["failed"] += 0 if outcome == "ok" else count
        agg["timeout"] += count if outcome == "timeout" else 0
        agg["full"] += full
        agg["timed"] += timed
        agg["seconds"] += seconds
        agg["buckets"] = [a + b for a, b in zip(agg["buckets"], buckets)]
    for engine, agg in per_engine.items():
        failures.add_metric([engine], agg["failed"])
        timeouts.add_metric([engine], agg["timeout"])
        queue_full.add_metric([engine], agg["full"])
        cumulative = [(repr(b), n) for b, n in zip(DURATION_BUCKETS, agg["buckets"])]
        latency.add_metric([engine], cumulative + [("+Inf", agg["timed"])], agg["seconds"])
    yield from (total, failures, timeouts, queue_full, latency)


def _cas_families(core: Any, snap: dict[str, Any]) -> Iterator[Any]:
    if snap["inventory"]:
        objects, original, stored, taken = snap["inventory"][0]
        for name, value, text in (
            ("requiem_cas_objects", objects, "Objects in the CAS at the last GC inventory."),
            ("requiem_cas_original_bytes", original, "Content bytes in the CAS at the last GC "
                                                     "inventory."),
            ("requiem_cas_stored_bytes", stored, "Bytes on disk (after compression) in the CAS "
                                                 "at the last GC inventory."),
            ("requiem_cas_inventory_timestamp_seconds", taken, "When the last GC inventory of "
                                                               "the CAS was taken (Unix time)."),
        ):
            gauge = core.GaugeMetricFamily(name, text)
            gauge.add_metric([], value or 0)
            yield gauge
    writes, distinct = snap["cas_writes"]
    ratio = core.GaugeMetricFamily("requiem_cas_dedup_hit_ratio",
                                   "Share of CAS writes by executions whose content was already "
                                   "stored.")
    ratio.add_metric([], (writes - distinct) / writes if writes else 0.0)
    yield ratio
    runs = core.CounterMetricFamily("requiem_cas_gc_runs", "CAS garbage collections, by mode.",
                                    labels=["mode"])
    deleted = core.CounterMetricFamily("requiem_cas_gc_deleted_objects",
                                       "Objects deleted by CAS garbage collection.")
    deleted_bytes = core.CounterMetricFamily("requiem_cas_gc_deleted_bytes",
                                             "Stored bytes freed by CAS garbage collection.")
    objects_freed = bytes_freed = 0
    for mode, count, objs, size in snap["gc"]:
        runs.add_metric([mode or "unknown"], count)
        objects_freed += objs
        bytes_freed += size
    deleted.add_metric([], objects_freed)
    deleted_bytes.add_metric([], bytes_freed)
    verify_runs = core.CounterMetricFamily("requiem_cas_verify_runs", "CAS verify runs.")
    verify_runs.add_metric([], snap["verify"][0])
    corrupt = core.GaugeMetricFamily("requiem_cas_corrupt_objects",
                                     "Corrupt objects found by the last CAS verify run.")
    corrupt.add_metric([], snap["verify"][1] or 0)
    yield from (runs, deleted, deleted_bytes, verify_runs, corrupt)


def _dual_run_families(core: Any, snap: dict[str, Any]) -> Iterator[Any]:
    mismatched, matched = snap["dual_runs"]
    runs = core.CounterMetricFamily("requiem_dual_runs", "Dual-run comparisons, by result.",
                                    labels=["result"])
    runs.add_metric(["match"], matched)
    runs.add_metric(["mismatch"], mismatched)
    categories = core.CounterMetricFamily("requiem_dual_run_mismatches",
                                          "Dual-run mismatches, by category and severity.",
                                          labels=["category", "severity"])
    for category, severity, count in snap["mismatches"]:
        categories.add_metric([category, severity], count)
    yield from (runs, categories)


def _sandbox_families(core: Any, snap: dict[str, Any]) -> Iterator[Any]:
    from requiem.sandbox.base import CAPABILITIES

    totals = core.CounterMetricFamily("requiem_sandbox_capability_executions",
                                      "Executions by the state each sandbox capability had.",
                                      labels=["capability", "state"])
    for capability, state, count in snap["sandbox_totals"]:
        totals.add_metric([capability, state], count)
    yield totals
    if not snap["sandbox_latest"]:
        return
    latest = core.GaugeMetricFamily("requiem_sandbox_capability_state",
                                    "State of each sandbox capability in the latest execution "
                                    "(1 for its state, 0 for the others).",
                                    labels=["capability", "state"])
    lists = dict(zip(SANDBOX_STATES, snap["sandbox_latest"][0]))
    for capability in CAPABILITIES:
        for state in SANDBOX_STATES:
            latest.add_metric([capability, state], int(capability in (lists[state] or [])))
    yield latest


class HistoryCollector:
    """A prometheus-client collector that reads the history on every collection."""

    def __init__(self, home: Any, raise_errors: bool = False) -> None:
        self.home = home
        self.raise_errors = raise_errors

    def collect(self) -> Iterator[Any]:
        from prometheus_client import core

        yield _build_info(core)
        up = core.GaugeMetricFamily("requiem_history_up",
                                    "1 when the history could be read for this collection.")
        try:
            snap = snapshot(self.home)
        except RequiemError:
            if self.raise_errors:
                raise
            # A scrape during a long hold reports the store down instead of failing.
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families(snap)


def registry(home: Any, raise_errors: bool = False) -> Any:
    """A private CollectorRegistry holding only the history collector."""
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(HistoryCollector(home, raise_errors))  # type: ignore[arg-type]
    return reg


def render_prom(home: Any) -> bytes:
    """The Prometheus text exposition of the history's metrics (history errors raise)."""
    from prometheus_client import generate_latest

    return generate_latest(registry(home, raise_errors=True))


def render_json(home: Any) -> dict[str, Any]:
    """The same metric families as a JSON document."""
    doc: dict[str, Any] = {}
    for family in registry(home, raise_errors=True).collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        doc[name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [{"name": s.name, "labels": dict(s.labels), "value": s.value}
                        for s in family.samples],
        }
    return {"ok": True, "metrics": doc}


def serve(home: Any, addr: str, port: int) -> tuple[Any, int]:
    """Serve /metrics on addr:port in a daemon thread; return the server and its bound port."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=addr, registry=registry(home))
    return server, server.server_address[1]
