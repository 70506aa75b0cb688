"""Dual-run comparison: two results of one request, sorted into the cutover report's categories."""

from __future__ import annotations

from typing import Any, Callable

SEVERITY = {
    "digest_mismatch": "critical",
    "exit_code_mismatch": "critical",
    "stdout_mismatch": "high",
    "stderr_mismatch": "high",
    "sandbox_diff": "high",
    "timing_diff": "medium",
    "metadata_diff": "medium",
}
CATEGORIES = tuple(SEVERITY)
_RANK = {"critical": 3, "high": 2, "medium": 1}
# Durations differ "significantly" when both the absolute and the relative gap are large.
TIMING_ABS_MS = 50.0
TIMING_REL = 0.5
METADATA_FIELDS = ("engine_version", "contract_version", "determinism_confidence",
                   "policy_applied")
CONTEXT_BYTES = 32

ContentReader = Callable[[str], bytes | None]


def first_difference(a: bytes, b: bytes) -> dict[str, Any]:
    """Where two byte strings first differ, with a little context from each side."""
    limit = min(len(a), len(b))
    offset = next((i for i in range(limit) if a[i] != b[i]), limit)
    lo = max(offset - CONTEXT_BYTES // 2, 0)
    return {
        "offset": offset,
        "primary_bytes": len(a),
        "secondary_bytes": len(b),
        "primary_context": a[lo:offset + CONTEXT_BYTES].decode("utf-8", "backslashreplace"),
        "secondary_context": b[lo:offset + CONTEXT_BYTES].decode("utf-8", "backslashreplace"),
    }


def _stream_bytes(result: dict[str, Any], name: str, read: ContentReader | None) -> bytes:
    digest = result.get(f"{name}_digest")
    if read is not None and digest:
        content = read(digest)
        if content is not None:
            return content
    text = result.get(name) or ""
    if result.get(f"{name}_encoding") == "base64":
        import base64

        return base64.b64decode(text)
    return text.encode("utf-8")


def compare(primary: dict[str, Any], secondary: dict[str, Any],
            read: ContentReader | None = None) -> dict[str, Any]:
    """The comparison report: categories, severities, and a JSON diff of what differs."""
    categories: list[str] = []
    diff: dict[str, Any] = {}
    if primary.get("result_digest") != secondary.get("result_digest"):
        categories.append("digest_mismatch")
        diff["result_digest"] = [primary.get("result_digest"), secondary.get("result_digest")]
        differing = sorted(k for k in ("ok", "error_code", "termination_reason", "trace_digest",
                                       "output_digests", "stdout_truncated", "stderr_truncated")
                           if primary.get(k) != secondary.get(k))
        if differing:
            diff["differing_fields"] = {k: [primary.get(k), secondary.get(k)] for k in differing}
    if primary.get("exit_code") != secondary.get("exit_code"):
        categories.append("exit_code_mismatch")
        diff["exit_code"] = [primary.get("exit_code"), secondary.get("exit_code")]
    for name in ("stdout", "stderr"):
        if primary.get(f"{name}_digest") != secondary.get(f"{name}_digest"):
            categories.append(f"{name}_mismatch")
            diff[name] = first_difference(_stream_bytes(primary, name, read),
                                          _stream_bytes(secondary, name, read))
    if primary.get("sandbox_applied", {}).get("enforced") != secondary.get(
            "sandbox_applied", {}).get("enforced") or primary.get("sandbox_applied", {}).get(
            "partial") != secondary.get("sandbox_applied", {}).get("partial"):
        categories.append("sandbox_diff")
        diff["sandbox_applied"] = [
            {k: primary.get("sandbox_applied", {}).get(k) for k in ("enforced", "partial")},
            {k: secondary.get("sandbox_applied", {}).get(k) for k in ("enforced", "partial")},
        ]
    a_ms, b_ms = primary.get("duration_ms"), secondary.get("duration_ms")
    if isinstance(a_ms, (int, float)) and isinstance(b_ms, (int, float)):
        gap = abs(a_ms - b_ms)
        if gap > TIMING_ABS_MS and gap > TIMING_REL * max(a_ms, b_ms):
            categories.append("timing_diff")
            diff["duration_ms"] = [a_ms, b_ms]
    # Metadata one engine does not report at all is not a difference between them.
    meta = {k: [primary.get(k), secondary.get(k)] for k in METADATA_FIELDS
            if k in primary and k in secondary
            and _comparable(primary[k], k) != _comparable(secondary[k], k)}
    if meta:
        categories.append("metadata_diff")
        diff["metadata"] = meta
    severities = {c: SEVERITY[c] for c in categories}
    max_severity = max(severities.values(), key=_RANK.__getitem__) if severities else None
    return {
        "mismatch": bool(categories),
        "categories": categories,
        "severities": severities,
        "max_severity": max_severity,
        "diff": diff,
        "primary_result_digest": primary.get("result_digest"),
        "secondary_result_digest": secondary.get("result_digest"),
    }


def _comparable(value: Any, key: str) -> Any:
    # Env key order and the sandbox backend's name are reported elsewhere (sandbox_diff).
    if key == "policy_applied" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "sandbox_backend"}
    return value
