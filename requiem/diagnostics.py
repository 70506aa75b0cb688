"""Health, doctor and replacement-readiness checks."""

from __future__ import annotations

from typing import Any

import requiem
from requiem import hashing
from requiem.home import Home


def sandbox_capabilities() -> dict[str, Any]:
    """What the best sandbox backend on this machine enforces, with the reason for each state."""
    from requiem import sandbox

    probe = getattr(sandbox, "machine_capabilities", None)
    if probe is None:
        return sandbox.NoneBackend().report(None).to_json()  # type: ignore[arg-type]
    return probe().to_json()


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
            "home": str(home.root),
            "sandbox_capabilities": sandbox_capabilities(),
        }
    )
    doc["ok"] = bool(doc["hash_available"])
    return doc
