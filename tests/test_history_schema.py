"""Schema migrations: a history written by an older Requiem is brought up to date in place."""

from __future__ import annotations

from pathlib import Path
from unittest.mock import patch

import duckdb

from requiem import history_fold, history_schema
from requiem.history import open_history
from requiem.history_schema import MIGRATIONS, SCHEMA_VERSION, ZSTD_COLUMNS
from requiem.home import Home
from tests.history_fixtures import write_executions


def _version_1_history(home: Path) -> None:
    """A history as Requiem with schema version 1 left it, holding folded executions."""
    path = str(home / "history.duckdb")
    with duckdb.connect(path) as con:
        con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                    "description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
        version, description, statements = MIGRATIONS[0]
        for statement in statements:
            con.execute(statement)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)",
                    [version, description])
        counts = {"folded": 0, "duplicates": 0, "quarantined": 0}
        table, shape, _ = history_schema.KINDS["execution"]
        # Folded as that Requiem did: into the columns of its time.
        with patch.dict(history_schema.KINDS,
                        {"execution": (table, shape, history_schema._EXECUTION_COLUMNS_V2)}):
            assert history_fold.fold_some(con, home / "spool", counts, None)
        assert counts["folded"] == 5


def _compression(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    rows = con.execute("SELECT column_name, compression FROM pragma_storage_info('executions') "
                       "WHERE segment_type = 'VARCHAR'").fetchall()
    found: dict[str, set[str]] = {}
    for column, compression in rows:
        found.setdefault(column, set()).add(compression)
    return found


def test_a_version_1_history_keeps_its_rows_and_gets_zstd_digest_columns(home: Path) -> None:
    write_executions(home / "spool", 5)
    _version_1_history(home)
    with duckdb.connect(str(home / "history.duckdb"), read_only=True) as con:
        before = con.execute("SELECT * FROM executions ORDER BY record_id").fetchall()
        roots = con.execute("SELECT count(*) FROM referenced_digests").fetchall()
    write_executions(home / "spool", 2, start=100)
    with open_history(Home.resolve(str(home))) as con:  # migrates, then folds the 2 new
        assert con.execute("SELECT max(version) FROM schema_migrations").fetchall() == [
            (SCHEMA_VERSION,)]
        assert con.execute("SELECT count(*) FROM executions").fetchall() == [(7,)]
        after = con.execute("SELECT * EXCLUDE (result_pack) FROM executions WHERE request_id "
                            "NOT IN ('req-100', 'req-101') ORDER BY record_id").fetchall()
        assert con.execute("SELECT count(result_pack) FROM executions").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM referenced_digests").fetchall()[0][0] > roots[0][0]
        con.execute("CHECKPOINT")
        compression = _compression(con)
    assert after == before
    for column in ZSTD_COLUMNS:
        assert compression[column] == {"ZSTD"}, (column, compression[column])
    assert "ZSTD" not in compression["command"]


def test_a_new_history_has_zstd_digest_columns(home: Path) -> None:
    write_executions(home / "spool", 3)
    with open_history(Home.resolve(str(home))) as con:
        con.execute("CHECKPOINT")
        compression = _compression(con)
        tables = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()")
                  .fetchall()}
    assert all(compression[column] == {"ZSTD"} for column in ZSTD_COLUMNS)
    assert "executions_v1" not in tables
