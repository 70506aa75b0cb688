#!/usr/bin/env python3
"""A small, independent engine speaking Requiem's CLI protocol, for dual-run tests.

It imports nothing from requiem: digests come straight from blake3 and rfc8785, as any
third-party engine would compute them from the contract. LEGACY_QUIRK makes it differ on
purpose in exactly one way (exit_code, stdout, stderr, sandbox, timing, metadata), or not at
all (none), so each dual-run category can be shown to be detected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import blake3
import rfc8785

FIXED_PATH = "/usr/local/bin:/usr/bin:/bin"
CAPABILITIES = sorted([
    "workspace_confinement", "rlimits", "process_isolation", "network_isolation",
    "seccomp_bpf", "no_new_privs", "process_mitigations",
])
DIGEST_FIELDS = ("request_digest", "ok", "exit_code", "error_code", "termination_reason",
                 "stdout_digest", "stderr_digest", "stdout_truncated", "stderr_truncated",
                 "output_digests", "trace_digest")


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def main(argv: list[str]) -> int:
    if argv[:2] != ["exec", "run"]:
        print(json.dumps({"ok": False, "error": {"code": "invalid_request", "message": "usage"}}))
        return 2
    request_path = argv[argv.index("--request") + 1]
    out_path = argv[argv.index("--out") + 1]
    quirk = os.environ.get("LEGACY_QUIRK", "none")
    with open(request_path, "rb") as handle:
        request = json.load(handle)
    core = {k: v for k, v in request.items() if k not in ("request_id", "nonce")}
    request_digest = b3(rfc8785.dumps(core))
    workspace = os.path.realpath(request.get("workspace_root", "."))
    env = {"TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
           "HOME": workspace, "PATH": FIXED_PATH, "SOURCE_DATE_EPOCH": "315532800"}
    env.update(request.get("env", {}))
    started = time.monotonic()
    proc = subprocess.run([request["command"], *request.get("argv", [])], cwd=workspace, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=request.get("timeout_ms", 5000) / 1000)
    exit_code = proc.returncode + (1 if quirk == "exit_code" else 0)
    stdout = proc.stdout + (b"!" if quirk == "stdout" else b"")
    stderr = proc.stderr + (b"legacy warning\n" if quirk == "stderr" else b"")
    if quirk == "timing":
        time.sleep(0.4)
    trace = [
        {"seq": 0, "type": "request", "data": {"request_digest": request_digest}},
        {"seq": 1, "type": "spawn",
         "data": {"command": request["command"], "argc": len(request.get("argv", [])) + 1}},
        {"seq": 2, "type": "exit", "data": {"exit_code": exit_code, "termination_reason": "exited"}},
    ]
    limit = request.get("max_output_bytes", 65536)
    result = {
        "ok": exit_code == 0, "exit_code": exit_code, "error_code": None,
        "termination_reason": "exited",
        "stdout": stdout[:limit].decode("utf-8", "replace"),
        "stderr": stderr[:limit].decode("utf-8", "replace"),
        "stdout_truncated": len(stdout) > limit, "stderr_truncated": len(stderr) > limit,
        "stdout_digest": b3(stdout), "stderr_digest": b3(stderr), "output_digests": {},
        "trace_events": [dict(e, t_ns=0) for e in trace],
        "trace_digest": b3(rfc8785.dumps(trace)),
        "request_digest": request_digest,
    }
    result["result_digest"] = b3(rfc8785.dumps({k: result[k] for k in DIGEST_FIELDS}))
    enforced = ["rlimits"] if quirk == "sandbox" else []
    result.update({
        "sandbox_applied": {"enforced": enforced, "partial": [],
                            "unsupported": [c for c in CAPABILITIES if c not in enforced]},
        "duration_ms": round((time.monotonic() - started) * 1000, 3),
        "engine_version": "legacy-1.3" if quirk == "metadata" else os.environ.get(
            "LEGACY_ENGINE_VERSION", "unknown"),
        "contract_version": os.environ.get("LEGACY_CONTRACT_VERSION", "unknown"),
    })
    with open(out_path, "w") as handle:
        json.dump(result, handle)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
