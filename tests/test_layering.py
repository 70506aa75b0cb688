"""The layering, proved at run time: what each entry point really imports (sys.modules)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("duckdb", "polars", "textual", "pyarrow", "prometheus_client", "zstandard")


def loaded_after(code: str, watched: tuple[str, ...] = HEAVY) -> list[str]:
    """Run code in a fresh interpreter; return which watched modules it left in sys.modules."""
    probe = code + (f"\nimport sys\nloaded = [m for m in {watched!r} if m in sys.modules]\n"
                    "import json\nsys.stderr.write(json.dumps(loaded))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    return json.loads(proc.stderr.strip().splitlines()[-1])


def test_exec_run_imports_nothing_heavy(tmp_path: Path) -> None:
    req = tmp_path / "r.json"
    req.write_text(json.dumps({"command": "true", "workspace_root": str(tmp_path)}))
    argv = ["--home", str(tmp_path / "h"), "exec", "run", "--request", str(req), "--out",
            str(tmp_path / "o.json")]
    assert loaded_after(f"from requiem.cli import main\nmain({argv!r})") == []


def test_a_plain_exec_run_skips_what_only_other_commands_need(tmp_path: Path) -> None:
    # Each costs every cold run milliseconds (benchmarks/RESULTS.md, issue 3).
    req = tmp_path / "r.json"
    req.write_text(json.dumps({"command": "true", "workspace_root": str(tmp_path),
                               "policy": {"sandbox": {"backend": "none"}}}))
    argv = ["--home", str(tmp_path / "h"), "exec", "run", "--request", str(req), "--out",
            str(tmp_path / "o.json")]
    # json (re), subprocess (locale, selectors), signal (enum), threading and contextlib
    # (functools): ~40M instructions of ~110M. collections and types: ~2.3 ms a start.
    extra = ("argparse", "typing", "dataclasses", "pathlib", "ctypes", "requiem.dual",
             "requiem.sandbox.probe", "json", "re", "subprocess", "signal", "enum", "threading",
             "contextlib", "functools", "orjson", "collections", "types", "operator")
    assert loaded_after(f"from requiem.cli import main\nmain({argv!r})", extra) == []


def test_the_core_never_loads_ui_or_dataframes() -> None:
    modules = ["requiem.canonical", "requiem.hashing", "requiem.cas", "requiem.contract",
               "requiem.runner", "requiem.engines", "requiem.sandbox", "requiem.spool",
               "requiem.proof", "requiem.diagnostics"]
    loaded = loaded_after("\n".join(f"import {m}" for m in modules))
    assert "textual" not in loaded and "polars" not in loaded


def test_analytics_never_loads_the_ui() -> None:
    loaded = loaded_after("import requiem.analytics")
    assert "textual" not in loaded and "polars" in loaded  # it really imported its own stack


def test_a_plain_health_with_a_warm_probe_cache_stays_light(tmp_path: Path) -> None:
    # health is the handshake scripts poll: its cold start is a benchmark goal (issue 2).
    argv = ["--home", str(tmp_path / "h"), "health"]
    code = f"from requiem.cli import main\nmain({argv!r})"
    loaded_after(code)  # the first run probes the sandbox and caches the findings in the home
    extra = ("argparse", "typing", "pathlib", "ctypes", "subprocess")
    assert loaded_after(code, extra) == []


def test_an_exec_batch_skips_what_only_other_commands_need(tmp_path: Path) -> None:
    lines = tmp_path / "r.jsonl"
    lines.write_text(json.dumps({"command": "true", "workspace_root": str(tmp_path),
                                 "policy": {"sandbox": {"backend": "none"}}}) + "\n")
    argv = ["--home", str(tmp_path / "h"), "exec", "batch", "--requests", str(lines), "--out",
            str(tmp_path / "o.jsonl")]
    extra = ("typing", "pathlib", "ctypes", "concurrent.futures", "logging", "argparse",
             "shutil", "pickle", "multiprocessing")
    # signal's enums, contextlib and threading (functools, collections): ~9 ms of a batch's
    # start (issue 3); workers need signal, and threading to tell the main thread.
    in_process = ("signal", "enum", "contextlib", "threading", "functools", "collections")
    assert loaded_after(f"from requiem.cli import main\nmain({argv!r})", extra + in_process) == []
    with_workers = [*argv, "--jobs", "2"]
    lines.write_text(lines.read_text() * 2)
    assert loaded_after(f"from requiem.cli import main\nmain({with_workers!r})", extra) == []


def test_only_a_long_batch_pays_for_orjson(tmp_path: Path) -> None:
    from requiem.batch import ORJSON_FROM_LINES

    line = json.dumps({"command": "true", "workspace_root": str(tmp_path),
                       "policy": {"sandbox": {"backend": "none"}}}) + "\n"
    lines = tmp_path / "r.jsonl"
    argv = ["--home", str(tmp_path / "h"), "exec", "batch", "--requests", str(lines), "--out",
            str(tmp_path / "o.jsonl")]
    code = f"from requiem.cli import main\nmain({argv!r})"
    lines.write_text(line * (ORJSON_FROM_LINES - 1))
    assert loaded_after(code, ("orjson",)) == []
    lines.write_text(line * ORJSON_FROM_LINES)
    assert loaded_after(code, ("orjson",)) == ["orjson"]
