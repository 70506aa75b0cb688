"""Proof bundles: a Merkle root (RFC 9162 shape, BLAKE3) binding a run's request, policy and outcome.

Leaves are `(label, digest)` pairs in a fixed order, each leaf hashed as BLAKE3(0x00 ‖ JCS([label,
digest])) and each node as BLAKE3(0x01 ‖ left ‖ right), with RFC 9162's split at the largest power
of two below n (an odd leaf is not duplicated). Anyone with an RFC 8785 tool and b3sum can
recompute it. The algorithm is named `RFC9162_BLAKE3` as the SCITT registry names its SHA-256 twin.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from requiem import canonical, contract, hashing

PROOF_VERSION = "1"
ALGORITHM = "RFC9162_BLAKE3"


def _h(data: bytes) -> bytes:
    return hashing.hasher().update(data).digest()


def leaf_hash(label: str, digest: str | None) -> bytes:
    """BLAKE3(0x00 ‖ JCS([label, digest]))."""
    return _h(b"\x00" + canonical.dumps([label, digest]))


def merkle_root(leaves: list[tuple[str, str | None]]) -> str:
    """The RFC 9162 Merkle tree head over labelled leaves, lowercase hex."""
    hashes = [leaf_hash(label, digest) for label, digest in leaves]
    return _tree(hashes).hex() if hashes else hashing.hash_bytes(b"")


def _tree(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    split = 1 << (len(hashes) - 1).bit_length() - 1
    return _h(b"\x01" + _tree(hashes[:split]) + _tree(hashes[split:]))


def leaves_of(request: dict[str, Any], result: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The bundle's leaves, in their documented order."""
    inputs = request.get("inputs") or {}
    outputs = result.get("output_digests") or {}
    leaves: list[tuple[str, str | None]] = [("request", contract.request_digest_of(request))]
    leaves += [(f"input:{path}", inputs[path]) for path in sorted(inputs)]
    leaves.append(("policy", policy_digest(request)))
    leaves += [("stdout", result.get("stdout_digest")), ("stderr", result.get("stderr_digest"))]
    leaves += [(f"output:{path}", outputs[path]) for path in sorted(outputs)]
    leaves += [("trace", result.get("trace_digest")), ("result", result.get("result_digest"))]
    return leaves


def policy_digest(request: dict[str, Any]) -> str:
    """BLAKE3(JCS(the request's policy object, {} when absent))."""
    return hashing.hash_bytes(canonical.dumps(request.get("policy") or {}))


def generate(request: dict[str, Any], result: dict[str, Any],
             signer: str | None = None) -> dict[str, Any]:
    """A proof bundle for one run; `signer` is a command given the root on stdin."""
    leaves = leaves_of(request, result)
    root = merkle_root(leaves)
    bundle: dict[str, Any] = {
        "proof_version": PROOF_VERSION,
        "algorithm": ALGORITHM,
        "merkle_root": root,
        "leaves": [{"label": label, "digest": digest} for label, digest in leaves],
        "request_digest": leaves[0][1],
        "result_digest": result.get("result_digest"),
        "input_digests": sorted((request.get("inputs") or {}).values()),
        "output_digests": [d for _, d in sorted((result.get("output_digests") or {}).items())],
        "policy_digest": policy_digest(request),
        "replay_transcript_digest": result.get("trace_digest"),
        "engine_version": result.get("engine_version"),
        "contract_version": result.get("contract_version"),
        "signature": None,
    }
    if signer:
        bundle["signature"] = _run_signer(signer, root)
    return bundle


def _run_signer(command: str, root: str) -> dict[str, str]:
    proc = subprocess.run(command, shell=True, input=root.encode(), capture_output=True,
                          timeout=60, check=False)
    if proc.returncode != 0:
        from requiem.errors import INVALID_REQUEST, RequiemError

        raise RequiemError(INVALID_REQUEST, f"signer failed: {proc.stderr.decode(errors='replace')}")
    return {"signer": command, "value": proc.stdout.decode().strip()}


def verify(bundle: dict[str, Any], request: dict[str, Any] | None = None,
           result: dict[str, Any] | None = None, cas: Any = None,
           verifier: str | None = None) -> dict[str, Any]:
    """Recompute the root from the leaves (and from request/result when given); check content."""
    checks: dict[str, Any] = {}
    leaves = [(leaf["label"], leaf["digest"]) for leaf in bundle.get("leaves", [])]
    root = merkle_root(leaves)
    checks["merkle_root"] = {"ok": root == bundle.get("merkle_root"), "recomputed": root}
    if request is not None and result is not None:
        expected = leaves_of(request, result)
        checks["leaves_match_run"] = {"ok": expected == leaves}
    if cas is not None:
        content = {}
        for label, digest in leaves:
            if label.split(":", 1)[0] in ("input", "output", "stdout", "stderr") and digest:
                reason = cas.verify_object(digest) if cas.contains(digest) else "not in the CAS"
                content[label] = reason or "ok"
        checks["content"] = {"ok": all(v == "ok" for v in content.values()), "objects": content}
    signature = bundle.get("signature")
    if verifier and signature:
        env = dict(os.environ, REQUIEM_PROOF_ROOT=root,
                   REQUIEM_PROOF_SIGNATURE=str(signature.get("value")))
        proc = subprocess.run(verifier, shell=True, env=env, capture_output=True, timeout=60)
        checks["signature"] = {"ok": proc.returncode == 0}
    elif signature:
        # A signature nobody checked proves nothing: say so rather than pass.
        checks["signature"] = {"ok": False, "verified": False,
                               "note": "present but not checked: give --verifier"}
    return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}
