"""Health, doctor and replacement-readiness checks."""

from __future__ import annotations

import os

import requiem
from requiem import hashing
from requiem.home import Home

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any


def sandbox_capabilities(home: Home) -> dict[str, Any]:
    """What the best sandbox backend on this machine enforces, with the reason for each state.

    The probe's findings are cached in the home, keyed by kernel and tool versions.
    """
    from requiem.sandbox import machine_capabilities

    return machine_capabilities(cache_dir=home.root_location).to_json()


def health(home: Home) -> dict[str, Any]:
    """The handshake document: hash facts, versions and sandbox capabilities."""
    doc: dict[str, Any] = {"ok": True}
    doc.update(hashing.status())
    doc.update(
        {
            "engine_version": requiem.ENGINE_VERSION,
            "protocol_version": requiem.PROTOCOL_VERSION,
            "contract_version": requiem.CONTRACT_VERSION,
            "cas_format_version": requiem.CAS_FORMAT_VERSION,
            "home": home.root_location,
            "sandbox_capabilities": sandbox_capabilities(home),
        }
    )
    doc["ok"] = bool(doc["hash_available"])
    return doc


_CAS_SAMPLE = 32
_DISK_BLOCKER_RATIO = 0.02
_DISK_WARNING_RATIO = 0.10
_MEMORY_WARNING_RATIO = 0.10
_SPOOL_BACKLOG_WARNING = 10_000


def _finding(kind: str, message: str, command: str, **detail: Any) -> dict[str, Any]:
    """A blocker or warning: what is wrong and the command that fixes or investigates it."""
    return {"id": kind, "message": message, "command": command, **detail}


def _existing_parent(path: str) -> str:
    while not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
    return path


def doctor(home: Home) -> dict[str, Any]:
    """Everything to check before trusting this machine: blockers, warnings and the facts."""
    import shutil

    import psutil

    from requiem.cas import Cas
    from requiem.config import defaults, load_config
    from requiem.errors import RequiemError
    from requiem.history import history_status

    blockers: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    facts = hashing.status()
    if not facts["hash_available"]:
        blockers.append(_finding("hash_unavailable", f"BLAKE3 is unavailable: {facts['reason']}",
                                 "pip install --force-reinstall blake3"))
    try:
        settings = load_config(home)
    except RequiemError as exc:
        settings = defaults()
        blockers.append(_finding("config_invalid", exc.message,
                                 f"requiem config validate --file {home.config_path}"))
    caps = sandbox_capabilities(home)
    reasons = caps.get("reasons", {})
    for state in ("unsupported", "partial"):
        for cap in caps[state]:
            warnings.append(_finding(f"sandbox_{state}", f"sandbox capability {cap} is {state}: "
                                     f"{reasons.get(cap, 'no reason given')}", "requiem health",
                                     capability=cap))
    for cap in settings["sandbox"]["required"]:
        if cap not in caps["enforced"]:
            blockers.append(_finding("sandbox_required_missing",
                                     f"config requires sandbox capability {cap}, which this "
                                     f"machine cannot enforce", "requiem health", capability=cap))
    sample = Cas(home.cas_root).verify(sample=_CAS_SAMPLE)
    if sample["corrupt"]:
        blockers.append(_finding("cas_corrupt", f"{len(sample['corrupt'])} of "
                                 f"{sample['objects_checked']} sampled CAS objects are corrupt",
                                 "requiem cas verify --all", corrupt=sample["corrupt"]))
    disk = shutil.disk_usage(_existing_parent(home.root_location))
    free_ratio = disk.free / disk.total if disk.total else 0.0
    if free_ratio < _DISK_WARNING_RATIO:
        (blockers if free_ratio < _DISK_BLOCKER_RATIO else warnings).append(_finding(
            "disk_space_low", f"{free_ratio:.1%} free on the home's filesystem",
            "requiem cas gc --execute", free_bytes=disk.free))
    memory = psutil.virtual_memory()
    if memory.available / memory.total < _MEMORY_WARNING_RATIO:
        warnings.append(_finding("memory_pressure", f"only {memory.available >> 20} MiB of "
                                 f"{memory.total >> 20} MiB memory available", "free -m"))
    history: dict[str, Any]
    try:
        history = history_status(home)
    except RequiemError as exc:
        history = {"error": exc.to_json()["error"]}
        target = warnings if exc.code == "history_busy" else blockers
        target.append(_finding(f"history_{exc.detail.get('reason', exc.code)}", exc.message,
                               "requiem history ingest"))
    if (history.get("schema_version") or 0) > history.get("supported_schema_version", 0):
        blockers.append(_finding("history_schema_newer", f"the history has schema version "
                                 f"{history['schema_version']}, newer than this Requiem "
                                 f"supports ({history['supported_schema_version']})",
                                 "pip install --upgrade requiem"))
    if history.get("spool_pending", 0) > _SPOOL_BACKLOG_WARNING:
        warnings.append(_finding("spool_backlog", f"{history['spool_pending']} spool records wait "
                                 "to be folded into the history", "requiem history ingest"))
    if history.get("quarantined"):
        warnings.append(_finding("spool_quarantine", f"{history['quarantined']} spool records "
                                 "could not be folded and were quarantined",
                                 f"ls {os.path.join(home.spool_location, 'quarantine')}"))
    legacy = settings["legacy_engine"]["path"]
    return {
        "ok": not blockers,
        "blockers": blockers,
        "warnings": warnings,
        "engine_version": requiem.ENGINE_VERSION,
        "protocol_version": requiem.PROTOCOL_VERSION,
        "contract_version": requiem.CONTRACT_VERSION,
        "cas_format_version": requiem.CAS_FORMAT_VERSION,
        "hash": facts,
        "sandbox_capabilities": caps,
        "cas": {"root": str(home.cas_root), "sample": sample},
        "disk": {"path": str(home.root), "free_bytes": disk.free, "total_bytes": disk.total,
                 "free_ratio": round(free_ratio, 4)},
        "memory": {"available_bytes": memory.available, "total_bytes": memory.total,
                   "percent_used": memory.percent},
        "history": history,
        "rollback": {
            "env": {"FORCE_RUST": "1"},
            "instructions": "set FORCE_RUST=1 in the caller's environment: every `requiem exec` "
                            "then exits 3 without running, and the caller falls back to the "
                            "legacy engine; unset it to return to Requiem",
            "legacy_engine": legacy,
        },
    }


# RFC 8785 section 3.2.4's example, its canonical form, and that form's BLAKE3 (from b3sum).
_JCS_INPUT = (b'{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
              b' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
              b' "literals": [null, true, false]}')
_JCS_OUTPUT = ('{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
               '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}').encode()
_JCS_DIGEST = "5b3b80c51be7d32b5df2e507fa592a888faf3a4c98b39ef647fadffcd4ce73bd"


def _contract_self_check() -> list[dict[str, Any]]:
    """Hash vectors, canonical JSON and a CAS round trip in a temporary directory."""
    import tempfile

    from requiem import canonical
    from requiem.cas import Cas

    checks: list[dict[str, Any]] = []

    def check(name: str, run: Any) -> None:
        try:
            detail = run()
            checks.append({"name": name, "ok": detail is None, "detail": detail})
        except Exception as exc:  # a self-check reports any failure instead of crashing
            checks.append({"name": name, "ok": False, "detail": f"{type(exc).__name__}: {exc}"})

    def hash_vectors() -> str | None:
        wrong = [repr(data) for data, want in hashing.SELF_TEST_VECTORS.items()
                 if hashing.hash_bytes(data) != want]
        return f"wrong digests for {', '.join(wrong)}" if wrong else None

    def canonical_json() -> str | None:
        got = canonical.dumps(canonical.loads(_JCS_INPUT))
        if got != _JCS_OUTPUT:
            return f"RFC 8785 example canonicalised to {got!r}"
        digest = hashing.hash_bytes(got)
        return None if digest == _JCS_DIGEST else f"digest of the canonical bytes is {digest}"

    def cas_round_trip() -> str | None:
        with tempfile.TemporaryDirectory(prefix="requiem-selfcheck-") as tmp:
            cas = Cas(tmp)
            blobs = {"identity": b"requiem self-check\n" * 1000, "zstd": b"compressible " * 5000}
            for encoding, data in blobs.items():
                info = cas.put_bytes(data, encoding=encoding)
                if info.digest != hashing.hash_bytes(data) or cas.read_bytes(info.digest) != data:
                    return f"a {encoding} object did not read back as written"
            report = cas.verify()
            if not report["ok"] or report["objects_checked"] != len(blobs):
                return f"verify of a fresh store failed: {report['corrupt']}"
            victim = cas.object_path(hashing.hash_bytes(blobs["identity"]))
            raw = bytearray(victim.read_bytes())
            raw[-1] ^= 0xFF
            victim.write_bytes(bytes(raw))
            if cas.verify()["ok"]:
                return "a flipped byte went unnoticed by verify"
        return None

    check("hash_vectors", hash_vectors)
    check("canonical_json", canonical_json)
    check("cas_round_trip", cas_round_trip)
    return checks


def validate_replacement(home: Home) -> dict[str, Any]:
    """Whether Requiem may replace the legacy engine here: hash, CAS sample, contract self-check."""
    from requiem.cas import Cas

    facts = hashing.status()
    blockers: list[dict[str, Any]] = []
    if facts["hash_primitive"] != "blake3":
        blockers.append(_finding("hash_not_blake3", f"hash primitive is {facts['hash_primitive']}",
                                 "requiem health"))
    if facts["hash_backend"] in ("fallback", "unavailable"):
        blockers.append(_finding("hash_backend", f"hash backend is {facts['hash_backend']}: "
                                 f"{facts.get('reason', '')}".rstrip(": "),
                                 "pip install --force-reinstall blake3"))
    checks = _contract_self_check() if facts["hash_available"] else []
    for failed in (c for c in checks if not c["ok"]):
        blockers.append(_finding(f"self_check_{failed['name']}", str(failed["detail"]),
                                 "requiem validate-replacement"))
    sample = Cas(home.cas_root).verify(sample=_CAS_SAMPLE) if facts["hash_available"] else None
    if sample and sample["corrupt"]:
        blockers.append(_finding("cas_corrupt", f"{len(sample['corrupt'])} sampled CAS objects "
                                 "are corrupt", "requiem cas verify --all"))
    return {
        "ok": not blockers,
        "blockers": blockers,
        "hash_primitive": facts["hash_primitive"],
        "hash_backend": facts["hash_backend"],
        "hash_version": facts["hash_version"],
        "checks": checks,
        "cas_sample": sample,
    }
