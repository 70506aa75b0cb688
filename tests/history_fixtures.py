"""Realistic history records made through the real producers, requiem.spool.write_record(s)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from requiem import hashing, spool

ENGINES = ("requiem", "rust", "dual")
SANDBOX_CAPABILITIES = ("workspace_confinement", "rlimits", "process_isolation",
                        "network_isolation", "seccomp_bpf", "no_new_privs", "process_mitigations")
CATEGORY_SEVERITY = {
    "digest_mismatch": "critical", "exit_code_mismatch": "critical",
    "stdout_mismatch": "high", "stderr_mismatch": "high", "sandbox_diff": "high",
    "timing_diff": "medium", "metadata_diff": "medium",
}
_SEVERITY_RANK = {"critical": 3, "high": 2, "medium": 1}
EMPTY_DIGEST = hashing.hash_bytes(b"")


def digest_of(text: str) -> str:
    """A stable digest for a label, so tests can name the objects they expect."""
    return hashing.hash_bytes(text.encode())


def _iso(second: int, micro: int = 0) -> str:
    return f"2026-03-01T10:{second // 60 % 60:02d}:{second % 60:02d}.{micro:06d}Z"


def execution_payload(n: int, *, engine: str = "requiem", ok: bool = True,
                      termination_reason: str = "exited", duration_ms: float = 12.5,
                      outputs: dict[str, str] | None = None, inputs: dict[str, str] | None = None,
                      stdout_digest: str | None = None, request_object: str | None = None,
                      result_object: str | None = None, result_pack: str | None = None,
                      refused: bool = False, dual_run: bool = False) -> dict[str, Any]:
    """The payload of one "execution" record as the runner writes it."""
    request_id = f"req-{n}"
    exit_code = None if refused or termination_reason == "timeout" else (0 if ok else 1)
    error_code = None if ok else ("timeout" if termination_reason == "timeout" else
                                  "invalid_request" if refused else None)
    return {
        "engine": engine,
        "request_id": request_id,
        "request_digest": None if refused else digest_of(f"request {n}"),
        "result_digest": None if refused else digest_of(f"result {n} {ok}"),
        "ok": ok,
        "exit_code": exit_code,
        "error_code": error_code,
        "termination_reason": "refused" if refused else termination_reason,
        "command": "/bin/true" if ok else "/bin/false",
        "stdout_digest": None if refused else (stdout_digest or digest_of(f"stdout {n % 7}")),
        "stderr_digest": None if refused else EMPTY_DIGEST,
        "trace_digest": None if refused else digest_of(f"trace {n % 3}"),
        "output_digests": (outputs if outputs is not None
                           else {"out/result.txt": digest_of(f"out {n}")}),
        "input_digests": inputs if inputs is not None else {"in/data.csv": digest_of("input data")},
        "request_object": None if refused else (request_object or digest_of(f"request object {n}")),
        "result_object": None if refused else (result_object or digest_of(f"result object {n}")),
        "result_pack": result_pack,
        "start_timestamp": _iso(n, 0),
        "end_timestamp": _iso(n, int(duration_ms * 1000) % 1_000_000),
        "duration_ms": duration_ms,
        "sandbox_applied": {"enforced": ["rlimits", "workspace_confinement"],
                            "partial": ["process_isolation"],
                            "unsupported": ["network_isolation", "no_new_privs",
                                            "process_mitigations", "seccomp_bpf"]},
        "determinism_confidence": {
            "level": "medium", "score": 0.7,
            "reasons": ["sandbox_capability_unsupported: network_isolation"]},
        "resource_usage": {"cpu_user_s": 0.001, "cpu_sys_s": 0.002, "max_rss_kib": 3200},
        "dual_run": dual_run,
        "queue_full": False,
    }


def dual_run_payload(n: int, categories: list[str] | tuple[str, ...] = (),
                     primary_object: str | None = None,
                     secondary_object: str | None = None) -> dict[str, Any]:
    """The payload of one "dual_run" comparison record."""
    severities = {c: CATEGORY_SEVERITY[c] for c in categories}
    worst = max(severities.values(), key=_SEVERITY_RANK.__getitem__) if severities else None
    return {
        "request_id": f"req-{n}",
        "request_digest": digest_of(f"request {n}"),
        "primary_engine": "requiem",
        "secondary_engine": "rust",
        "primary_result_digest": digest_of(f"result {n} True"),
        "secondary_result_digest": digest_of(f"result {n} {'x' if categories else True}"),
        "mismatch": bool(categories),
        "categories": list(categories),
        "severities": severities,
        "max_severity": worst,
        "diff": {c: {"primary": "a", "secondary": "b"} for c in categories},
        "primary_result_object": primary_object or digest_of(f"primary object {n}"),
        "secondary_result_object": secondary_object or digest_of(f"secondary object {n}"),
    }


def executions(start: int, count: int, seed: int = 7,
               packed: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """`count` varied ("execution", payload) records (engines, failures, timeouts); packed: as
    a batch writes them, their result documents in packs of 64."""
    rng = random.Random(seed)
    records = []
    for n in range(start, start + count):
        roll = rng.random()
        records.append(("execution", execution_payload(
            n, engine=ENGINES[n % 3], ok=roll >= 0.2,
            termination_reason="timeout" if roll < 0.05 else "exited",
            duration_ms=round(rng.lognormvariate(2.5, 1.0), 3),
            result_pack=digest_of(f"pack {n // 64}") if packed else None,
        )))
    return records


def write_executions(spool_dir: Path, count: int, start: int = 0, seed: int = 7) -> list[str]:
    """Spool `count` varied execution records one write_record each; return record ids."""
    return [spool.write_record(spool_dir, kind, payload)
            for kind, payload in executions(start, count, seed)]


def spool_dir_of(home: Path) -> Path:
    """The spool directory of a home (as requiem.home.Home lays it out)."""
    return home / "spool"
