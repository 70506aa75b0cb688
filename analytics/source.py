"""Where analytics read from: the history (folded, then held read-only) and the home it lives in."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import polars as pl

from requiem import history
from requiem.home import Home

HomeLike = Home | str | os.PathLike[str]


def as_home(home: HomeLike) -> Home:
    """A Home from a Home or a directory path, whose CAS root config.json may move."""
    if isinstance(home, Home):
        return home
    from types import SimpleNamespace

    from requiem.commands import home_of

    return home_of(SimpleNamespace(home=os.fspath(home)))


@contextmanager
def read_history(home: HomeLike) -> Iterator[Any]:
    """Fold the spool, then yield a read-only DuckDB connection to the history for this block.

    Other readers (the TUI, `requiem metrics`, another notebook) share the hold; writers wait
    for the block to end, so keep it short and take frames out of it.
    """
    resolved = as_home(home)
    history.ingest(resolved)
    with history.open_history(resolved, read_only=True) as con:
        yield con


def frame(con: Any, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    """Run one query and return its rows as a Polars frame (through Arrow)."""
    return con.sql(sql, params=params).pl()


def first_row(con: Any, sql: str, params: list[Any] | None = None) -> dict[str, Any] | None:
    """The first row of a query as a dict, or None when it returns nothing."""
    rows = frame(con, sql, params).head(1).to_dicts()
    return rows[0] if rows else None
