"""The history database's schema: tables, migrations, and how each spool record maps to a row.

Schema version 3 (every table has `record_id` VARCHAR, the BLAKE3 id of the spool record, and
`recorded_at` TIMESTAMP, UTC, when the producer made the record: a batch makes it as the run
ends and writes it with its group):

- `schema_migrations(version, description, applied_at)`: one row per applied migration.
- `executions`: one row per "execution" record: `engine`, `request_id`, `request_digest`,
  `result_digest`, `ok`, `exit_code`, `error_code`, `termination_reason`, `command`,
  `stdout_digest`, `stderr_digest`, `trace_digest`, `output_digests` and `input_digests`
  (MAP path → digest), `request_object`, `result_object` (CAS digests), `result_pack` (see
  version 3), `start_timestamp`,
  `end_timestamp` (TIMESTAMP, UTC), `duration_ms`, `sandbox_enforced`, `sandbox_partial`,
  `sandbox_unsupported` (VARCHAR[]), `confidence_level`, `confidence_score`,
  `confidence_reasons`, `cpu_user_s`, `cpu_sys_s`, `max_rss_kib`, `dual_run`, `queue_full`.
- `dual_runs`: one row per "dual_run" comparison: `request_id`, `request_digest`,
  `primary_engine`, `secondary_engine`, `primary_result_digest`, `secondary_result_digest`,
  `mismatch`, `categories` (VARCHAR[]), `severities` (MAP category → severity), `max_severity`,
  `diff` (JSON), `primary_result_object`, `secondary_result_object`.
- `dual_run_mismatches(record_id, recorded_at, request_id, category, severity)`: one row per
  mismatch category of a comparison.
- `cas_verify_runs`: `mode`, `objects_total`, `objects_checked`, `bytes_checked`,
  `corrupt_count`, `corrupt` (JSON list of {digest, reason}).
- `cas_gc_runs`: `mode` (dry_run|execute), `grace_ms`, `started_at`, `objects_scanned`, `live`,
  `pinned`, `young`, `unreadable`, `candidates`, `candidate_bytes`, `deleted`, `deleted_bytes`,
  `objects_after`, `original_bytes_after`, `stored_bytes_after` (the CAS inventory after the run).
- `cas_events`: "cas_put" records: `event`, `digest`, `encoding`, `original_size`, `stored_size`,
  `existed`.
- `bench_runs`: "bench" records, `payload` (JSON: the whole record).
- view `referenced_digests(digest)`: every digest the history references (the GC roots).

Version 2 changed only how `executions` is stored: its digest columns (ZSTD_COLUMNS) are
compressed with zstd instead of DuckDB's default choice; types, names and order are those of 1.
Version 3 added `executions.result_pack`: the CAS object (JSON lines, one result document each)
holding the run's result document when a batch stored it in its group's pack; `result_object`
is then that document's digest, not an object of its own.
"""

from __future__ import annotations

import json
from typing import Any

from requiem.errors import INVALID_REQUEST, RequiemError

_EXECUTION_SHAPE = {
    "engine": "VARCHAR", "request_id": "VARCHAR", "request_digest": "VARCHAR",
    "result_digest": "VARCHAR", "ok": "BOOLEAN", "exit_code": "BIGINT", "error_code": "VARCHAR",
    "termination_reason": "VARCHAR", "command": "VARCHAR", "stdout_digest": "VARCHAR",
    "stderr_digest": "VARCHAR", "trace_digest": "VARCHAR",
    "output_digests": "MAP(VARCHAR, VARCHAR)", "input_digests": "MAP(VARCHAR, VARCHAR)",
    "request_object": "VARCHAR", "result_object": "VARCHAR", "result_pack": "VARCHAR",
    "start_timestamp": "TIMESTAMP",
    "end_timestamp": "TIMESTAMP", "duration_ms": "DOUBLE",
    "sandbox_applied": {"enforced": "VARCHAR[]", "partial": "VARCHAR[]",
                        "unsupported": "VARCHAR[]"},
    "determinism_confidence": {"level": "VARCHAR", "score": "DOUBLE", "reasons": "VARCHAR[]"},
    "resource_usage": {"cpu_user_s": "DOUBLE", "cpu_sys_s": "DOUBLE", "max_rss_kib": "BIGINT"},
    "dual_run": "BOOLEAN", "queue_full": "BOOLEAN",
}

# (column, type, expression over `r`, the record parsed with the kind's shape), as of version 2
_EXECUTION_COLUMNS_V2 = (
    ("engine", "VARCHAR", "r.engine"),
    ("request_id", "VARCHAR", "r.request_id"),
    ("request_digest", "VARCHAR", "r.request_digest"),
    ("result_digest", "VARCHAR", "r.result_digest"),
    ("ok", "BOOLEAN", "r.ok"),
    ("exit_code", "BIGINT", "r.exit_code"),
    ("error_code", "VARCHAR", "r.error_code"),
    ("termination_reason", "VARCHAR", "r.termination_reason"),
    ("command", "VARCHAR", "r.command"),
    ("stdout_digest", "VARCHAR", "r.stdout_digest"),
    ("stderr_digest", "VARCHAR", "r.stderr_digest"),
    ("trace_digest", "VARCHAR", "r.trace_digest"),
    ("output_digests", "MAP(VARCHAR, VARCHAR)", "r.output_digests"),
    ("input_digests", "MAP(VARCHAR, VARCHAR)", "r.input_digests"),
    ("request_object", "VARCHAR", "r.request_object"),
    ("result_object", "VARCHAR", "r.result_object"),
    ("start_timestamp", "TIMESTAMP", "r.start_timestamp"),
    ("end_timestamp", "TIMESTAMP", "r.end_timestamp"),
    ("duration_ms", "DOUBLE", "r.duration_ms"),
    ("sandbox_enforced", "VARCHAR[]", "r.sandbox_applied.enforced"),
    ("sandbox_partial", "VARCHAR[]", "r.sandbox_applied.partial"),
    ("sandbox_unsupported", "VARCHAR[]", "r.sandbox_applied.unsupported"),
    ("confidence_level", "VARCHAR", "r.determinism_confidence.level"),
    ("confidence_score", "DOUBLE", "r.determinism_confidence.score"),
    ("confidence_reasons", "VARCHAR[]", "r.determinism_confidence.reasons"),
    ("cpu_user_s", "DOUBLE", "r.resource_usage.cpu_user_s"),
    ("cpu_sys_s", "DOUBLE", "r.resource_usage.cpu_sys_s"),
    ("max_rss_kib", "BIGINT", "r.resource_usage.max_rss_kib"),
    ("dual_run", "BOOLEAN", "coalesce(r.dual_run, false)"),
    ("queue_full", "BOOLEAN", "coalesce(r.queue_full, false)"),
)
_EXECUTION_COLUMNS = (*_EXECUTION_COLUMNS_V2, ("result_pack", "VARCHAR", "r.result_pack"))

_DUAL_RUN_SHAPE = {
    "request_id": "VARCHAR", "request_digest": "VARCHAR", "primary_engine": "VARCHAR",
    "secondary_engine": "VARCHAR", "primary_result_digest": "VARCHAR",
    "secondary_result_digest": "VARCHAR", "mismatch": "BOOLEAN", "categories": "VARCHAR[]",
    "severities": "MAP(VARCHAR, VARCHAR)", "max_severity": "VARCHAR", "diff": "JSON",
    "primary_result_object": "VARCHAR", "secondary_result_object": "VARCHAR",
}
_DUAL_RUN_COLUMNS = tuple((name, kind, f"r.{name}") for name, kind in _DUAL_RUN_SHAPE.items())

_CAS_VERIFY_SHAPE = {"mode": "VARCHAR", "objects_total": "BIGINT", "objects_checked": "BIGINT",
                     "bytes_checked": "BIGINT", "corrupt": "JSON"}
_CAS_VERIFY_COLUMNS = (
    ("mode", "VARCHAR", "r.mode"),
    ("objects_total", "BIGINT", "r.objects_total"),
    ("objects_checked", "BIGINT", "r.objects_checked"),
    ("bytes_checked", "BIGINT", "r.bytes_checked"),
    ("corrupt_count", "BIGINT", "coalesce(json_array_length(r.corrupt), 0)"),
    ("corrupt", "JSON", "r.corrupt"),
)

_GC_COUNTS = ("objects_scanned", "live", "pinned", "young", "unreadable", "candidates",
              "candidate_bytes", "deleted", "deleted_bytes", "objects_after",
              "original_bytes_after", "stored_bytes_after")
_CAS_GC_SHAPE = {"mode": "VARCHAR", "grace_ms": "BIGINT", "started_at": "TIMESTAMP",
                 **{name: "BIGINT" for name in _GC_COUNTS}}
_CAS_GC_COLUMNS = (
    ("mode", "VARCHAR", "r.mode"),
    ("grace_ms", "BIGINT", "r.grace_ms"),
    ("started_at", "TIMESTAMP", "r.started_at"),
    *((name, "BIGINT", f"r.{name}") for name in _GC_COUNTS),
)

_CAS_PUT_SHAPE = {"digest": "VARCHAR", "encoding": "VARCHAR", "original_size": "BIGINT",
                  "stored_size": "BIGINT", "existed": "BOOLEAN"}
_CAS_PUT_COLUMNS = (("event", "VARCHAR", "'put'"),
                    *((name, kind, f"r.{name}") for name, kind in _CAS_PUT_SHAPE.items()))

# kind → (table, the record's JSON shape for json_transform, columns)
KINDS: dict[str, tuple[str, dict[str, Any], tuple[tuple[str, str, str], ...]]] = {
    "execution": ("executions", _EXECUTION_SHAPE, _EXECUTION_COLUMNS),
    "dual_run": ("dual_runs", _DUAL_RUN_SHAPE, _DUAL_RUN_COLUMNS),
    "cas_verify": ("cas_verify_runs", _CAS_VERIFY_SHAPE, _CAS_VERIFY_COLUMNS),
    "cas_gc": ("cas_gc_runs", _CAS_GC_SHAPE, _CAS_GC_COLUMNS),
    "cas_put": ("cas_events", _CAS_PUT_SHAPE, _CAS_PUT_COLUMNS),
    "bench": ("bench_runs", {}, (("payload", "JSON", "r"),)),
}

_ENVELOPE = (("record_id", "VARCHAR NOT NULL"), ("recorded_at", "TIMESTAMP NOT NULL"))

# Columns of 64-hex digests, mostly unique. DuckDB's default for them, DICT_FSST, trains an FSST
# symbol table for every block it writes (~20 % of a 1M-record fold's instructions). With zstd
# the fold takes 3-6 % less wall time for a ~14 % bigger file (251 vs 220 MiB per 1M executions
# of benchmarks/history_bench.py); the metrics queries read it as fast. Uncompressed would be
# faster still (~10 %) but 2.6x the size, and would lose the dedup of repeated digests.
ZSTD_COLUMNS = frozenset({"record_id", "request_digest", "result_digest", "stdout_digest",
                          "stderr_digest", "trace_digest", "request_object", "result_object"})


def _table_ddl(table: str, columns: tuple[tuple[str, str, str], ...],
               zstd: frozenset[str] = frozenset()) -> str:
    body = ", ".join(f"{name} {kind}" + (" USING COMPRESSION zstd" if name in zstd else "")
                     for name, kind in (*_ENVELOPE, *((name, kind) for name, kind, _ in columns)))
    return f"CREATE TABLE {table} ({body})"


# Digest-valued columns: what the GC must keep (content the history can still point at). Each
# migration that changes the view keeps the text it created, as the migrations themselves do.
_REFERENCED_DIGESTS_V1 = """
CREATE VIEW referenced_digests AS
SELECT unnest([request_digest, result_digest, stdout_digest, stderr_digest, trace_digest,
               request_object, result_object]) AS digest FROM executions
UNION ALL SELECT unnest(map_values(output_digests)) FROM executions
UNION ALL SELECT unnest(map_values(input_digests)) FROM executions
UNION ALL SELECT unnest([primary_result_digest, secondary_result_digest, primary_result_object,
                         secondary_result_object]) FROM dual_runs
"""
_REFERENCED_DIGESTS_V3 = _REFERENCED_DIGESTS_V1.replace(
    "request_object, result_object]", "request_object, result_object, result_pack]")

# Each migration moves the schema from version-1 to version; never edit a released one.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "executions, dual runs, CAS verify/GC/put events, bench runs", (
        *(_table_ddl(table, _EXECUTION_COLUMNS_V2 if table == "executions" else columns)
          for table, _, columns in KINDS.values()),
        _table_ddl("dual_run_mismatches", (("request_id", "VARCHAR", ""),
                                           ("category", "VARCHAR NOT NULL", ""),
                                           ("severity", "VARCHAR", ""))),
        _REFERENCED_DIGESTS_V1,
    )),
    # A column's compression is fixed when its table is created: rebuild executions.
    (2, "executions: digest columns compressed with zstd", (
        "DROP VIEW referenced_digests",
        "ALTER TABLE executions RENAME TO executions_v1",
        _table_ddl("executions", _EXECUTION_COLUMNS_V2, ZSTD_COLUMNS),
        "INSERT INTO executions SELECT * FROM executions_v1",
        "DROP TABLE executions_v1",
        _REFERENCED_DIGESTS_V1,
    )),
    (3, "executions: result_pack, the batch pack holding a run's result document", (
        "DROP VIEW referenced_digests",
        "ALTER TABLE executions ADD COLUMN result_pack VARCHAR",
        _REFERENCED_DIGESTS_V3,
    )),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(con: Any) -> int:
    """The schema version of an open history database (0 when it is empty)."""
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE schema_name = 'main' AND table_name = 'schema_migrations'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    rows = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()
    return int(rows[0][0])


def check_supported(version: int, path: str) -> None:
    """Refuse a history written by a newer Requiem instead of misreading it."""
    if version > SCHEMA_VERSION:
        raise RequiemError(
            INVALID_REQUEST,
            f"history {path} has schema version {version}, newer than this Requiem supports "
            f"({SCHEMA_VERSION}); upgrade requiem, or point --home at another directory",
            reason="history_schema_newer", history_schema_version=version,
            supported_schema_version=SCHEMA_VERSION, path=path,
        )


def migrate(con: Any, path: str) -> int:
    """Bring an open read-write database up to SCHEMA_VERSION; return the version it had."""
    found = schema_version(con)
    check_supported(found, path)
    if found == 0:
        con.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                    "description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
    for version, description, statements in MIGRATIONS:
        if version <= found:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)",
                        [version, description])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return found


def _struct(shape: dict[str, Any]) -> str:
    fields = ", ".join(f'"{name}" {_struct(kind) if isinstance(kind, dict) else kind}'
                       for name, kind in shape.items())
    return f"STRUCT({fields})"


def _record_shape(kind: str) -> dict[str, Any] | str:
    """What a kind's record parses into: its shape with the envelope, or the JSON (bench)."""
    shape = KINDS[kind][1]
    if not shape:
        return "JSON"  # a bench record is kept whole
    # Timestamps parse in the reader: a string that is none makes the fast fold fail and the
    # careful one (json_transform) read NULL, as TRY_CAST would.
    return {"kind": "VARCHAR", "schema": "BIGINT", "recorded_at": "TIMESTAMP", **shape}


def record_type(kind: str) -> str:
    """The DuckDB type a kind's record reads as (read_ndjson `columns`)."""
    shape = _record_shape(kind)
    return shape if isinstance(shape, str) else _struct(shape)


def line_shape(kind: str) -> str:
    """The json_transform shape of a whole spool line of a kind: {id, record}."""
    return json.dumps({"id": "VARCHAR", "record": _record_shape(kind)})


def checked(kind: str, source: str) -> str:
    """SQL over `source` (id, r: the parsed record) yielding (record_id, recorded_at, r); any
    record that is not a schema-1 record of the kind with a 64-character record id and a
    recorded_at makes the statement fail (error()), so a fold that expected clean records never
    folds a bad one. The id is not re-hashed here (spool.split_line + BLAKE3 can verify it).
    """
    from requiem.spool import RECORD_SCHEMA

    if KINDS[kind][1]:
        found, schema, at = "r.kind", f"r.schema = {RECORD_SCHEMA}", "r.recorded_at"
    else:
        found = "json_extract_string(r, '$.kind')"
        at = "TRY_CAST(json_extract_string(r, '$.recorded_at') AS TIMESTAMP)"
        schema = f"json_extract_string(r, '$.schema') = '{RECORD_SCHEMA}'"
    return (f"SELECT CASE WHEN length(id) = 64 AND {found} = '{kind}' AND {schema} "
            f"AND {at} IS NOT NULL THEN id ELSE error('not a schema-{RECORD_SCHEMA} {kind} "
            f"spool record: ' || coalesce(id, 'no id')) END AS record_id, {at} AS recorded_at, "
            f"r FROM ({source})")


def insert_statements(kind: str, source: str) -> list[str]:
    """SQL that moves a kind's records in from `source` (record_id, recorded_at, r).

    Rows already in the table are skipped (anti join on record_id), so folding is idempotent.
    With more than one statement, `source` should be a staged table: each reads it again.
    """
    table, _, columns = KINDS[kind]
    fresh = f"SELECT * FROM ({source}) s ANTI JOIN {table} t USING (record_id)"
    names = ", ".join(name for name, _, _ in columns)
    exprs = ", ".join(expr for _, _, expr in columns)
    statements = []
    if kind == "dual_run":
        # Written before dual_runs itself, while the anti join still sees only new records.
        statements.append(
            "INSERT INTO dual_run_mismatches SELECT record_id, recorded_at, r.request_id, "
            f"category, r.severities[category] FROM (SELECT *, unnest(r.categories) AS category "
            f"FROM ({fresh}))"
        )
    statements.append(f"INSERT INTO {table} (record_id, recorded_at, {names}) "
                      f"SELECT record_id, recorded_at, {exprs} FROM ({fresh})")
    return statements
