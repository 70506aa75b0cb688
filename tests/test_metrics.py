"""`requiem metrics`: names, values from the history, promtool, JSON, and a live /metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from requiem import spool
from tests.conftest import cli_command
from tests.history_fixtures import dual_run_payload, execution_payload, write_executions

PROMTOOL = shutil.which("promtool")


def _populate(home: Path) -> None:
    spool_dir = home / "spool"
    write_executions(spool_dir, 30)
    spool.write_record(spool_dir, "execution", {**execution_payload(500, engine="rust"),
                                                "queue_full": True})
    spool.write_record(spool_dir, "dual_run", dual_run_payload(1, ["digest_mismatch",
                                                                    "stdout_mismatch"]))
    spool.write_record(spool_dir, "dual_run", dual_run_payload(2, ["digest_mismatch"]))
    spool.write_record(spool_dir, "dual_run", dual_run_payload(3))


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_prom_text_is_computed_from_the_history(cli, home: Path) -> None:
    _populate(home)
    got = cli("metrics", "--format", "prom")
    assert got.returncode == 0, got.stdout
    samples = _samples(got.stdout)
    executions = {k: v for k, v in samples.items() if k[0] == "requiem_executions_total"}
    assert sum(executions.values()) == 31
    failures = sum(v for k, v in samples.items() if k[0] == "requiem_execution_failures_total")
    outcomes = {dict(k[1])["outcome"] for k in executions}
    assert outcomes <= {"ok", "failed", "timeout", "refused", "error"} and failures > 0
    assert _value(samples, "requiem_execution_queue_full_total", engine="rust") == 1
    counts = [v for k, v in samples.items() if k[0] == "requiem_execution_duration_seconds_count"]
    assert sum(counts) == 31
    assert _value(samples, "requiem_dual_runs_total", result="mismatch") == 2
    assert _value(samples, "requiem_dual_runs_total", result="match") == 1
    assert _value(samples, "requiem_dual_run_mismatches_total", category="digest_mismatch",
                  severity="critical") == 2
    assert _value(samples, "requiem_sandbox_capability_state", capability="rlimits",
                  state="enforced") == 1
    assert 0 < _value(samples, "requiem_cas_dedup_hit_ratio") < 1
    assert _value(samples, "requiem_history_up") == 1
    assert all(name.startswith("requiem_") for name, _ in samples)


def test_a_batchs_pack_of_results_is_one_cas_write_not_a_run_of_dedup_hits(cli, home: Path) -> None:
    """128 runs of a batch: their result documents are in 2 packs, 2 writes; the only content
    stored before is the empty stderr, 127 hits out of 3 writes a run and the packs."""
    from tests.history_fixtures import digest_of

    spool.write_records(home / "spool", [("execution", execution_payload(
        n, stdout_digest=digest_of(f"stdout {n}"), outputs={}, inputs={},
        result_pack=digest_of(f"pack {n // 64}"))) for n in range(128)])
    samples = _samples(cli("metrics", "--format", "prom").stdout)
    assert _value(samples, "requiem_cas_dedup_hit_ratio") == pytest.approx(127 / (128 * 3 + 2))


def test_metric_names_follow_prometheus_conventions(cli, home: Path) -> None:
    _populate(home)
    for family in text_string_to_metric_families(cli("metrics", "--format", "prom").stdout):
        assert family.name.startswith("requiem_")
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples)
        if "duration" in family.name:
            assert family.name.endswith("_seconds")
        if "bytes" in family.name:  # counters are named here without their _total
            assert family.name.endswith("_bytes")


@pytest.mark.skipif(PROMTOOL is None,
                    reason="promtool not installed (Debian: apt install prometheus)")
def test_prom_text_passes_promtool(cli, home: Path) -> None:
    _populate(home)
    assert cli("cas", "gc").returncode == 0  # adds the CAS inventory gauges
    text = cli("metrics", "--format", "prom").stdout
    assert "requiem_cas_objects" in text
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                             text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_json_and_prom_agree(cli, home: Path) -> None:
    _populate(home)
    prom = _samples(cli("metrics", "--format", "prom").stdout)
    doc = cli("metrics", "--format", "json").json
    assert doc["ok"] is True
    as_json = {(s["name"], tuple(sorted(s["labels"].items()))): s["value"]
               for family in doc["metrics"].values() for s in family["samples"]}
    assert as_json == prom
    assert doc["metrics"]["requiem_executions_total"]["type"] == "counter"


def test_metrics_serve_agrees_with_a_cold_run(cli, home: Path) -> None:
    _populate(home)
    proc = subprocess.Popen(cli_command() + ["--home", str(home), "metrics", "serve", "--port",
                                             "0"], stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        while not lines or lines[-1] != "}\n":
            lines.append(proc.stdout.readline())
        url = json.loads("".join(lines))["url"]
        assert url.startswith("http://127.0.0.1:")
        scraped = urllib.request.urlopen(url, timeout=30).read().decode()
        assert _samples(scraped) == _samples(cli("metrics", "--format", "prom").stdout)
        write_executions(home / "spool", 4, start=1000)  # a scrape folds what arrived since
        after = _samples(urllib.request.urlopen(url, timeout=30).read().decode())
        total = sum(v for k, v in after.items() if k[0] == "requiem_executions_total")
        assert total == 35
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
