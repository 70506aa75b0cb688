"""Requiem: run commands deterministically and provably."""

from requiem.errors import RequiemError

__all__ = [
    "CAS_FORMAT_VERSION",
    "CONTRACT_VERSION",
    "ENGINE_VERSION",
    "PROTOCOL_VERSION",
    "RequiemError",
]

ENGINE_VERSION = "0.8.0"
PROTOCOL_VERSION = "v1"
# 2.0: digests are BLAKE3 over RFC 8785 bytes, and result_digest covers the outcome only.
CONTRACT_VERSION = "2.0"
CAS_FORMAT_VERSION = "v2"
