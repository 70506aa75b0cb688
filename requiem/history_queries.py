"""Reading the history for the CLI: execution listings, records in full, and Parquet export."""

from __future__ import annotations

import json
import os
from datetime import date, datetime
from pathlib import Path
from typing import Any

from requiem.errors import INVALID_REQUEST, RequiemError
from requiem.history import open_history
from requiem.history_schema import KINDS

LISTED_COLUMNS = ("record_id", "recorded_at", "engine", "request_id", "ok", "exit_code",
                  "error_code", "termination_reason", "duration_ms", "command", "result_digest")
EXPORTED_TABLES = (*(table for table, _, _ in KINDS.values()), "dual_run_mismatches")
_KIND_OF_TABLE = {table: kind for kind, (table, _, _) in KINDS.items()}
_JSON_COLUMNS = {table: [name for name, kind, _ in columns if kind == "JSON"]
                 for table, _, columns in KINDS.values()}


def _plain(column: str, value: Any) -> Any:
    """A DuckDB value as JSON: timestamps ISO with Z, JSON columns parsed."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and any(column in names for names in _JSON_COLUMNS.values()):
        return json.loads(value)
    return value


def _dicts(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [{n: _plain(n, v) for n, v in zip(names, row)} for row in cursor.fetchall()]


def list_executions(home: Any, limit: int = 20, engine: str | None = None,
                    failed: bool = False) -> dict[str, Any]:
    """The newest executions, optionally of one engine or only those that failed."""
    where, params = [], []
    if engine:
        where.append("engine = ?")
        params.append(engine)
    if failed:
        where.append("NOT coalesce(ok, false)")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    with open_history(home) as con:
        total = con.execute(f"SELECT count(*) FROM executions {clause}", params).fetchall()[0][0]
        rows = _dicts(con.execute(
            f"SELECT {', '.join(LISTED_COLUMNS)} FROM executions {clause} "
            "ORDER BY recorded_at DESC, record_id LIMIT ?", [*params, limit]))
    return {"ok": True, "total": total, "count": len(rows), "executions": rows}


def show(home: Any, ident: str) -> dict[str, Any]:
    """Records whose record id starts with ident, else the executions and comparisons of the
    request whose request_id is ident."""
    with open_history(home) as con:
        records: list[dict[str, Any]] = []
        if len(ident) >= 6 and all(c in "0123456789abcdef" for c in ident):
            for table, kind in _KIND_OF_TABLE.items():
                for row in _dicts(con.execute(f"SELECT * FROM {table} WHERE starts_with("
                                              "record_id, ?) LIMIT 10", [ident])):
                    records.append({"kind": kind, **row})
            if len(records) > 1:
                raise RequiemError(INVALID_REQUEST, f"{ident!r} is the start of several record "
                                   "ids; give more of it",
                                   candidates=sorted(r["record_id"] for r in records))
        if not records:
            for table in ("executions", "dual_runs"):
                for row in _dicts(con.execute(f"SELECT * FROM {table} WHERE request_id = ? "
                                              "ORDER BY recorded_at, record_id", [ident])):
                    records.append({"kind": _KIND_OF_TABLE[table], **row})
    if not records:
        raise RequiemError(INVALID_REQUEST, f"no history record has id or request_id {ident!r}")
    return {"ok": True, "id": ident, "count": len(records), "records": records}


def export_parquet(home: Any, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write every table as Parquet under out_dir/<table>/day=YYYY-MM-DD/ (Hive partitioning),
    replacing an earlier export of the same table."""
    root = Path(out_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Any] = {}
    with open_history(home) as con:
        for table in EXPORTED_TABLES:
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            target = root / table
            tables[table] = {"rows": rows, "path": str(target)}
            if not rows:
                continue
            quoted = str(target).replace("'", "''")
            # JSON as text: Parquet readers elsewhere (Polars, Spark) see a string, not bytes.
            as_text = ", ".join(f"CAST({c} AS VARCHAR) AS {c}"
                                for c in _JSON_COLUMNS.get(table, []))
            columns = f"* REPLACE ({as_text})" if as_text else "*"
            con.execute(f"COPY (SELECT {columns}, CAST(recorded_at AS DATE) AS day FROM {table}) "
                        f"TO '{quoted}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (day), "
                        "OVERWRITE)").fetchall()
    return {"ok": True, "dir": str(root), "format": "parquet", "partitioning": "hive",
            "partition_column": "day", "tables": tables}
