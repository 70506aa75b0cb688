"""Recent executions: a bounded, sortable table with a `/` filter; Enter opens one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input

from requiem.tui.format import clock, count, millis, outcome

if TYPE_CHECKING:
    from requiem.analytics import Snapshot

# (key, label) in display order; the row values for sorting keep the same order.
COLUMNS = (("time", "time (UTC)"), ("engine", "engine"), ("command", "command"),
           ("outcome", "outcome"), ("ms", "ms"), ("dual", "dual"), ("request", "request id"))


class Millis:
    """A run time cell: sorts as a number, renders right-aligned."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __rich__(self) -> Text:
        return Text(millis(self.value), justify="right")


def _sort_key(value: Any) -> tuple[bool, Any]:
    """Cells compare by their plain value; empty cells sort last."""
    plain = value.plain if isinstance(value, Text) else getattr(value, "value", value)
    return (plain is None or plain == "", plain)


class ExecutionsPanel(Vertical, can_focus=False):
    """The newest N executions (never the whole history); rows change only when records do."""

    BINDINGS = [Binding("s", "sort_next", "Sort"), Binding("S", "sort_reverse", "Reverse"),
                Binding("escape", "clear_filter", show=False)]

    class Opened(Message):
        """The user asked for one execution's detail."""

        def __init__(self, record_id: str) -> None:
            super().__init__()
            self.record_id = record_id

    class FilterChanged(Message):
        """The user submitted a new filter (empty: none)."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, *, id: str) -> None:
        super().__init__(id=id)
        self.sort_by, self.descending = "time", True
        self.filter_text = ""
        self._heading = "Recent executions"

    def compose(self) -> ComposeResult:
        yield Input(placeholder="filter: command, engine, outcome, request id, error, digest…",
                    id="filter")
        table: DataTable[Any] = DataTable(id="executions-table", cursor_type="row",
                                          zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table

    def on_mount(self) -> None:
        self._show_heading()

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one(DataTable)

    def show(self, snap: Snapshot) -> None:
        """Add new rows and drop old ones (cells of a record never change), keeping the cursor."""
        table = self.table
        rows = {row["record_id"]: row for row in snap.executions.iter_rows(named=True)}
        selected = self._selected_key()
        if (snap.filter or "") != self.filter_text:
            table.clear()
            self.filter_text = snap.filter or ""
        present = {key.value for key in table.rows}
        for gone in present - rows.keys():
            table.remove_row(gone)
        added = [key for key in rows if key not in present]
        for key in added:
            table.add_row(*self._cells(rows[key]), key=key)
        if added:
            self._sort()
        if selected in rows:
            table.move_cursor(row=table.get_row_index(selected), scroll=False)
        self._title(snap, len(rows))

    def _title(self, snap: Snapshot, shown: int) -> None:
        outcomes = snap.outcomes
        where = f" matching “{self.filter_text}”" if self.filter_text else ""
        self._heading = (f"Recent executions · newest {count(shown)}{where} of "
                         f"{count(outcomes.get('total'))}")
        latency = {row["engine"]: row for row in snap.latency.iter_rows(named=True)}.get("all")
        p50 = millis(latency["p50_ms"]) if latency else "—"
        p99 = millis(latency["p99_ms"]) if latency else "—"
        self.border_subtitle = (" · ".join(f"{name} {count(outcomes.get(name))}" for name in
                                           ("ok", "failed", "timeout", "refused"))
                                + f" · last hour p50 {p50} ms · p99 {p99} ms")
        self._show_heading()

    def _show_heading(self) -> None:
        label = dict(COLUMNS)[self.sort_by]
        self.border_title = f"{self._heading} · by {label} {'↓' if self.descending else '↑'}"

    @staticmethod
    def _cells(row: dict[str, Any]) -> tuple[Any, ...]:
        # Text, not str: a command name is data, never console markup.
        return (clock(row["recorded_at"]), Text(row["engine"] or ""), Text(row["command"] or ""),
                outcome(row), "" if row["duration_ms"] is None else Millis(row["duration_ms"]),
                "⇄" if row["dual_run"] else "",
                Text(row["request_id"] or ""))

    def _selected_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def _sort(self) -> None:
        self.table.sort(self.sort_by, key=_sort_key, reverse=self.descending)

    def sort_on(self, column: str) -> None:
        """Sort by a column; asking again for the same column reverses the order."""
        self.descending = not self.descending if column == self.sort_by else column in (
            "time", "ms")
        self.sort_by = column
        self._sort()
        self._show_heading()

    def action_sort_next(self) -> None:
        """Sort by the next column (time, engine, command, outcome, ms, dual, request id)."""
        keys = [key for key, _ in COLUMNS]
        self.sort_on(keys[(keys.index(self.sort_by) + 1) % len(keys)])

    def action_sort_reverse(self) -> None:
        self.sort_on(self.sort_by)

    def action_clear_filter(self) -> None:
        self.query_one(Input).value = ""
        self.remove_class("filtering")
        if self.filter_text:
            self.post_message(self.FilterChanged(""))
        self.table.focus()

    def open_filter(self) -> None:
        """Show the filter box and put the cursor in it."""
        self.add_class("filtering")
        self.query_one(Input).focus()

    @on(DataTable.HeaderSelected)
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_on(str(event.column_key.value))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.post_message(self.Opened(str(event.row_key.value)))

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self.remove_class("filtering")
        self.table.focus()
        self.post_message(self.FilterChanged(text))
