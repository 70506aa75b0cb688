"""DuckDB settings a fold changes for itself are back to their defaults when the caller queries."""

from __future__ import annotations

from pathlib import Path

from requiem import spool
from requiem.history import open_history
from requiem.home import Home
from tests.history_fixtures import write_executions


def _preserved(con) -> bool:
    return con.execute("SELECT current_setting('preserve_insertion_order')").fetchall()[0][0]


def test_insertion_order_is_preserved_again_after_a_clean_fold(home: Path) -> None:
    write_executions(home / "spool", 4)
    with open_history(Home.resolve(str(home))) as con:
        assert con.execute("SELECT count(*) FROM executions").fetchall() == [(4,)]
        assert _preserved(con) is True


def test_insertion_order_is_preserved_again_after_a_fold_that_quarantined(home: Path) -> None:
    write_executions(home / "spool", 3)
    with open(home / "spool" / spool.active_name("execution"), "ab") as segment:
        segment.write(b'{"id":"' + b"0" * 64 + b'","record":{"kind":"execution"}}\n')
    with open_history(Home.resolve(str(home))) as con:  # the fast path fails, then careful
        assert con.execute("SELECT count(*) FROM executions").fetchall() == [(3,)]
        assert _preserved(con) is True
    assert spool.quarantined_count(home / "spool") == 1
