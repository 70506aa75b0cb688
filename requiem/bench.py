"""Benchmarks of requests through the engine, comparisons, the CI gate and drift analysis."""

from __future__ import annotations

import statistics
import time
from typing import Any

import requiem
from requiem import canonical
from requiem.engines import Session
from requiem.errors import INVALID_REQUEST, RequiemError
from requiem.home import Home
from requiem.spool import write_record

DEFAULT_ITERATIONS = 20


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = max(0, min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run(home: Home, spec: dict[str, Any]) -> dict[str, Any]:
    """Run spec["request"] spec["iterations"] times (after warmup); latency and digest drift."""
    if not isinstance(spec, dict) or not isinstance(spec.get("request"), dict):
        raise RequiemError(INVALID_REQUEST, "/request: a bench spec needs a request object")
    iterations = spec.get("iterations", DEFAULT_ITERATIONS)
    warmup = spec.get("warmup", 1)
    if not isinstance(iterations, int) or not 1 <= iterations <= 100_000:
        raise RequiemError(INVALID_REQUEST, "/iterations: must be an integer from 1 to 100000")
    if not isinstance(warmup, int) or not 0 <= warmup <= 1000:
        raise RequiemError(INVALID_REQUEST, "/warmup: must be an integer from 0 to 1000")
    session = Session(home)
    latencies: list[float] = []
    digests: dict[str, int] = {}
    failures = 0
    try:
        for i in range(warmup + iterations):
            start = time.perf_counter()
            result = session.execute(spec["request"], spec.get("engine"))
            elapsed = (time.perf_counter() - start) * 1000
            if i < warmup:
                continue
            latencies.append(elapsed)
            if "result_digest" in result:
                digests[result["result_digest"]] = digests.get(result["result_digest"], 0) + 1
            if result.get("ok") is not True:
                failures += 1
    finally:
        session.close()
    ordered = sorted(latencies)
    report = {
        "ok": failures == 0,
        "name": spec.get("name", "bench"),
        "iterations": iterations,
        "failures": failures,
        "latency_ms": {
            "p50": round(_percentile(ordered, 0.5), 3),
            "p95": round(_percentile(ordered, 0.95), 3),
            "p99": round(_percentile(ordered, 0.99), 3),
            "mean": round(statistics.fmean(ordered), 3),
            "min": round(ordered[0], 3),
            "max": round(ordered[-1], 3),
        },
        "result_digests": dict(sorted(digests.items())),
        "engine_version": requiem.ENGINE_VERSION,
    }
    write_record(home.spool_dir, "bench", {k: v for k, v in report.items() if k != "ok"})
    return report


def compare(baseline: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """Percent change of each latency figure from baseline to current (positive = slower)."""
    try:
        base, cur = baseline["latency_ms"], current["latency_ms"]
        change = {k: round((cur[k] - base[k]) / base[k] * 100, 2) if base[k] else 0.0
                  for k in ("p50", "p95", "p99", "mean")}
    except (KeyError, TypeError) as exc:
        raise RequiemError(INVALID_REQUEST, f"not a bench result: missing {exc}") from None
    return {"ok": True, "baseline": base, "current": cur, "change_percent": change}


def gate(baseline: dict[str, Any], current: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Fail (ok=false) when p50 or p95 regressed by more than threshold percent."""
    report = compare(baseline, current)
    regressions = {k: v for k, v in report["change_percent"].items()
                   if k in ("p50", "p95") and v > threshold}
    report.update({"ok": not regressions, "threshold_percent": threshold,
                   "regressions": regressions})
    return report


def drift(bench: dict[str, Any]) -> dict[str, Any]:
    """Drift in a bench result: the same request producing more than one result digest."""
    digests = bench.get("result_digests")
    if not isinstance(digests, dict):
        raise RequiemError(INVALID_REQUEST, "not a bench result: no result_digests")
    return {"ok": len(digests) <= 1, "distinct_result_digests": len(digests),
            "result_digests": digests, "drift_detected": len(digests) > 1}


def load(path: str) -> dict[str, Any]:
    """A JSON document from a file, strictly parsed."""
    doc = canonical.load_file(path, max_bytes=64 << 20)
    if not isinstance(doc, dict):
        raise RequiemError(INVALID_REQUEST, f"{path}: expected a JSON object")
    return doc
