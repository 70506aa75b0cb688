"""Replay and digest verification: anyone can recompute a result's digests and re-run it."""

from __future__ import annotations

from typing import Any

from requiem import canonical, contract
from requiem.cas import Cas
from requiem.dual import first_difference
from requiem.engines import Session
from requiem.errors import REPLAY_FAILED, RequiemError
from requiem.home import Home

STORED_DIGEST_FIELDS = ("stdout_digest", "stderr_digest")


def verify_digests(result_path: str, request_path: str | None = None) -> dict[str, Any]:
    """Recompute trace_digest, result_digest (and request_digest given the request)."""
    result = canonical.load_file(result_path, max_bytes=256 << 20)
    checks: dict[str, Any] = {}
    if "trace_events" in result:
        got = contract.trace_digest_of(result["trace_events"])
        checks["trace_digest"] = {"ok": got == result.get("trace_digest"), "recomputed": got,
                                  "recorded": result.get("trace_digest")}
    got = contract.result_digest_of(result)
    checks["result_digest"] = {"ok": got == result.get("result_digest"), "recomputed": got,
                               "recorded": result.get("result_digest")}
    if request_path:
        document = canonical.load_file(request_path)
        got = contract.request_digest_of(document)
        checks["request_digest"] = {"ok": got == result.get("request_digest"), "recomputed": got,
                                    "recorded": result.get("request_digest")}
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}


def _recorded_digests(result: dict[str, Any]) -> dict[str, str]:
    digests = {f: result[f] for f in STORED_DIGEST_FIELDS if result.get(f)}
    for path, digest in (result.get("output_digests") or {}).items():
        if digest:
            digests[f"output_digests/{path}"] = digest
    return digests


def replay(home: Home, request_path: str, result_path: str) -> dict[str, Any]:
    """Re-run a request, compare result digests, and check the recorded content is intact."""
    document = canonical.load_file(request_path)
    recorded = canonical.load_file(result_path, max_bytes=256 << 20)
    cas = Cas(home.cas_root)
    content = {}
    for field, digest in _recorded_digests(recorded).items():
        reason = cas.verify_object(digest) if cas.contains(digest) else "not in the CAS"
        content[field] = {"digest": digest, "ok": reason is None, **({"reason": reason} if reason else {})}
    session = Session(home)
    try:
        fresh = session.execute(document, "requiem")
    finally:
        session.close()
    if "result_digest" not in fresh:
        raise RequiemError(REPLAY_FAILED, "the replay was refused: "
                           + fresh.get("error", {}).get("message", "unknown error"),
                           replay_error=fresh.get("error"))
    divergence = None
    if fresh["result_digest"] != recorded.get("result_digest"):
        divergence = _first_divergence(recorded, fresh, cas)
    report = {
        "ok": divergence is None and all(c["ok"] for c in content.values()),
        "recorded_result_digest": recorded.get("result_digest"),
        "replayed_result_digest": fresh["result_digest"],
        "content": content,
    }
    if divergence is not None or not report["ok"]:
        bad = [f for f, c in content.items() if not c["ok"]]
        message = (f"replay diverged at {divergence['field']}" if divergence
                   else f"recorded content missing or corrupt: {', '.join(bad)}")
        raise RequiemError(REPLAY_FAILED, message, divergence=divergence, content=content,
                           recorded_result_digest=report["recorded_result_digest"],
                           replayed_result_digest=report["replayed_result_digest"])
    return report


def _first_divergence(recorded: dict[str, Any], fresh: dict[str, Any], cas: Cas) -> dict[str, Any]:
    for field in contract.RESULT_DIGEST_FIELDS:
        if recorded.get(field) != fresh.get(field):
            found: dict[str, Any] = {"field": field, "recorded": recorded.get(field),
                                     "replayed": fresh.get(field)}
            if field in STORED_DIGEST_FIELDS:
                found["bytes"] = first_difference(_content(cas, recorded.get(field)),
                                                  _content(cas, fresh.get(field)))
            return found
    return {"field": "result_digest", "recorded": recorded.get("result_digest"),
            "replayed": fresh.get("result_digest")}


def _content(cas: Cas, digest: Any) -> bytes:
    try:
        return cas.read_bytes(digest, limit=1 << 20) if digest else b""
    except RequiemError:
        return b""
