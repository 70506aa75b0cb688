"""requiem-tui driven by Textual's Pilot over a history the engine really made."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from requiem import analytics, history
from requiem.cas import Cas
from requiem.errors import HISTORY_BUSY, RequiemError
from requiem.home import Home
from requiem.tui import RequiemApp
from requiem.tui.detail import DetailScreen
from requiem.tui.help import HelpScreen
from requiem.tui.views import CasScreen, MismatchScreen
from tests.conftest import run_cli
from tests.test_demo import copy_home, shared_demo

SIZE = (160, 48)


@pytest.fixture
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_demo(tmp_path_factory)[0]


def drive(app: RequiemApp, scenario: Callable[[Pilot[None]], Awaitable[None]]) -> None:
    """Run the app headless at 160x48 and play a scenario against it."""

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())


async def settle(pilot: Pilot[None], timeout: float = 20) -> None:
    """Wait until data is on screen and no worker (refresh, doctor, view) is still running."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3 and time.monotonic() < deadline:
        await pilot.pause(0.02)
        busy = any(w.is_running for w in pilot.app.workers) or pilot.app.snapshot is None
        quiet = 0 if busy else quiet + 1
    assert pilot.app.snapshot is not None, "no data reached the screen"


def text_of(widget: Static) -> str:
    """What a panel shows, as plain text (its title included)."""
    console = Console(width=widget.content_size.width or 200, file=io.StringIO(), record=True)
    console.print(widget.content)
    return f"{widget.border_title}\n{console.export_text()}"


def rows_of(table: DataTable[Any]) -> list[list[str]]:
    """A table's cells as the text they show (numbers as their value)."""
    return [[cell.plain if isinstance(cell, Text) else str(getattr(cell, "value", cell))
             for cell in table.get_row_at(i)] for i in range(table.row_count)]


def sql(home: Path, query: str) -> Any:
    with history.open_history(Home.resolve(str(home)), read_only=True) as con:
        return con.sql(query).fetchall()


def test_first_screen_shows_health_sandbox_and_mismatches_at_once(demo: Path) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)

    async def scenario(pilot: Pilot[None]) -> None:
        screen = pilot.app.screen
        health_text = text_of(screen.query_one("#health", Static))
        assert "hash" in health_text and "blake3" in health_text and "self-test ok" in health_text
        caps = analytics.snapshot(demo).health["sandbox_capabilities"]
        sandbox_text = text_of(screen.query_one("#sandbox", Static))
        for state in ("enforced", "partial", "unsupported"):
            assert f"{len(caps[state])} {state}" in sandbox_text
            for capability in caps[state]:
                line = next(l for l in sandbox_text.splitlines() if f" {capability} " in l)
                assert line.strip().startswith(state), line
        mismatch_text = text_of(screen.query_one("#mismatches", Static))
        counts = dict(sql(demo, "SELECT category, count(*) FROM dual_run_mismatches GROUP BY 1"))
        for category in ("digest_mismatch", "exit_code_mismatch", "stdout_mismatch",
                         "stderr_mismatch", "sandbox_diff", "timing_diff", "metadata_diff"):
            line = next(l for l in mismatch_text.splitlines() if l.strip().startswith(category))
            assert f" {counts.get(category, 0)} " in line, line
        compared, mismatching = sql(demo, "SELECT count(*), count(*) FILTER (WHERE mismatch) "
                                          "FROM dual_runs")[0]
        assert f"{compared} comparisons · {mismatching} mismatching" in mismatch_text

    drive(app, scenario)


def test_panels_show_the_numbers_of_the_history(demo: Path) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)

    async def scenario(pilot: Pilot[None]) -> None:
        screen = pilot.app.screen
        total, ok, timeouts = sql(demo, "SELECT count(*), count(*) FILTER (WHERE ok), count(*) "
                                        "FILTER (WHERE termination_reason = 'timeout') "
                                        "FROM executions")[0]
        executions = screen.query_one("#executions")
        assert f"newest {total} of {total}" in executions.border_title
        assert f"ok {ok} ·" in executions.border_subtitle
        assert f"timeout {timeouts} ·" in executions.border_subtitle
        assert screen.query_one("#executions-table", DataTable).row_count == total
        health_text = text_of(screen.query_one("#health", Static))
        assert f"{total} executions" in health_text
        assert "dual-run 10% sampled" in health_text
        objects = len(list(Cas(demo / "cas").list_digests()))
        cas_text = text_of(screen.query_one("#cas", Static))
        assert f"objects   {objects} " in cas_text
        assert f"1 corrupt of {objects} checked" in cas_text
        warnings = screen.query_one("#warnings", Static)
        assert "blockers" in warnings.border_title and "warnings" in warnings.border_title

    drive(app, scenario)


def test_filter_shows_only_matching_executions_and_esc_clears_it(demo: Path) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)

    async def scenario(pilot: Pilot[None]) -> None:
        table = pilot.app.screen.query_one("#executions-table", DataTable)
        everything = table.row_count
        await pilot.press("slash", *"timeout", "enter")
        await settle(pilot)
        rows = rows_of(table)
        timeouts = sql(demo, "SELECT count(*) FROM executions "
                             "WHERE termination_reason = 'timeout'")[0][0]
        assert timeouts >= 1
        assert [row[3] for row in rows] == ["timeout"] * timeouts
        assert "matching “timeout”" in pilot.app.screen.query_one("#executions").border_title
        await pilot.press("slash", "escape")
        await settle(pilot)
        assert table.row_count == everything

    drive(app, scenario)


def test_columns_sort_and_reverse(demo: Path) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)

    async def scenario(pilot: Pilot[None]) -> None:
        table = pilot.app.screen.query_one("#executions-table", DataTable)
        times = [row[0] for row in rows_of(table)]
        assert times == sorted(times, reverse=True)  # newest first
        await pilot.press("s", "s", "s", "s")  # time -> engine -> command -> outcome -> ms
        await pilot.pause()
        durations = [float(row[4]) for row in rows_of(table)]
        assert durations == sorted(durations, reverse=True)
        await pilot.press("S")
        await pilot.pause()
        assert [float(row[4]) for row in rows_of(table)] == sorted(durations)
        assert "by ms ↑" in pilot.app.screen.query_one("#executions").border_title

    drive(app, scenario)


def test_enter_opens_the_detail_with_output_trace_and_diff(demo: Path) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)
    with analytics.read_history(demo) as con:
        target = analytics.recent_mismatches(con, 1).row(0, named=True)

    async def scenario(pilot: Pilot[None]) -> None:
        table = pilot.app.screen.query_one("#executions-table", DataTable)
        table.move_cursor(row=table.get_row_index(target["primary_record_id"]))
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(pilot.app.screen, DetailScreen)
        deadline = time.monotonic() + 10
        while pilot.app.screen.detail is None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        detail = pilot.app.screen.detail
        screen = pilot.app.screen
        assert text_of(screen.query_one("#stdout-body", Static)).strip().endswith(
            detail.stdout.text.strip())
        trace = screen.query_one("#trace-table", DataTable)
        assert [row[2] for row in rows_of(trace)] == [e["type"] for e in detail.trace_events]
        diff_text = text_of(screen.query_one("#diff-body", Static))
        for category in target["categories"]:
            assert category in diff_text
        result = json.loads(detail.result.text)
        assert result["result_digest"] in text_of(screen.query_one("#result-body", Static))
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, DetailScreen)

    drive(app, scenario)


def test_refresh_picks_up_runs_made_by_another_process(demo: Path, tmp_path: Path) -> None:
    home = copy_home(demo, tmp_path / "home")
    app = RequiemApp(Home.resolve(str(home)), refresh_s=3600)
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"command": "echo", "argv": ["from another process"],
                                   "request_id": "tui-refresh-probe",
                                   "workspace_root": str(tmp_path)}))

    async def scenario(pilot: Pilot[None]) -> None:
        before = pilot.app.snapshot.outcomes["total"]
        # --engine requiem: the demo's config samples 10% of default runs into dual mode,
        # which would record two executions.
        got = await asyncio.to_thread(run_cli, "exec", "run", "--request", str(request),
                                      "--out", str(tmp_path / "out.json"), "--engine",
                                      "requiem", home=home)
        assert got.returncode == 0, got.stderr
        await pilot.press("r")
        await settle(pilot)
        table = pilot.app.screen.query_one("#executions-table", DataTable)
        assert any(row[6] == "tui-refresh-probe" for row in rows_of(table))
        assert pilot.app.snapshot.outcomes["total"] == before + 1
        assert "1 folded now" in text_of(pilot.app.screen.query_one("#health", Static))

    drive(app, scenario)


def test_cas_and_mismatch_views_open_from_the_main_screen(
        demo: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)
    puts = shared_demo(tmp_path_factory)[1]["cas_puts"]

    async def scenario(pilot: Pilot[None]) -> None:
        await pilot.press("c")
        await settle(pilot)
        screen = pilot.app.screen
        assert isinstance(screen, CasScreen)
        top = rows_of(screen.query_one("#top-table", DataTable))
        assert top and top[0][0] == analytics.cas_stats(analytics.cas_objects(demo))["top"][
            "digest"][0]
        unreferenced = {row[0] for row in rows_of(screen.query_one("#gc-table", DataTable))}
        # The files no request used as an input; the others are roots.
        assert unreferenced == {puts[name] for name in ("app.log", "blob.bin", "notes.txt")}
        assert "corrupt" in text_of(screen.query_one("#verify-body", Static))
        await pilot.press("escape", "m")
        await settle(pilot)
        assert isinstance(pilot.app.screen, MismatchScreen)
        recent = rows_of(pilot.app.screen.query_one("#mismatch-table", DataTable))
        mismatching = sql(demo, "SELECT count(*) FROM dual_runs WHERE mismatch")[0][0]
        assert len(recent) == mismatching
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(pilot.app.screen, DetailScreen)

    drive(app, scenario)


def test_help_palette_and_quit_keys(demo: Path) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)

    async def scenario(pilot: Pilot[None]) -> None:
        await pilot.press("question_mark")
        assert isinstance(pilot.app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, HelpScreen)
        titles = [c.title for c in pilot.app.get_system_commands(pilot.app.screen)]
        assert {"Refresh now", "Filter executions", "CAS view"} <= set(titles)
        await pilot.press("tab")
        assert pilot.app.focused is not None and pilot.app.focused.id == "warnings"
        await pilot.press("q")
        await pilot.pause()
        assert not pilot.app.is_running

    drive(app, scenario)


def test_a_busy_history_keeps_the_last_data_and_says_so(
        demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)

    async def scenario(pilot: Pilot[None]) -> None:
        def busy(*args: Any, **kwargs: Any) -> Any:
            raise RequiemError(HISTORY_BUSY, "the history is busy: another process held it")

        monkeypatch.setattr(analytics, "snapshot", busy)
        rows = pilot.app.screen.query_one("#executions-table", DataTable).row_count
        await pilot.press("r")
        await settle(pilot)
        status = text_of(pilot.app.screen.query_one("#status", Static))
        assert "refresh failed" in status and "history is busy" in status
        assert pilot.app.screen.query_one("#executions-table", DataTable).row_count == rows

    drive(app, scenario)


def test_the_ui_answers_keys_while_a_refresh_is_slow(
        demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = RequiemApp(Home.resolve(str(demo)), refresh_s=3600)
    real = analytics.snapshot

    released = threading.Event()

    async def scenario(pilot: Pilot[None]) -> None:
        def slow(*args: Any, **kwargs: Any) -> Any:
            released.wait(30)  # a huge history or a long hold by another process
            return real(*args, **kwargs)

        monkeypatch.setattr(analytics, "snapshot", slow)
        await pilot.press("r")
        try:
            await pilot.press("question_mark")
            assert isinstance(pilot.app.screen, HelpScreen)
            assert any(w.is_running for w in pilot.app.workers)  # answered while the refresh hangs
        finally:
            released.set()

    drive(app, scenario)
