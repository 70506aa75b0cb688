"""Requiem: run commands deterministically and provably.

The engine's cold start is a benchmark goal (`requiem exec run` in <= 40 ms), and most of it is
the standard library's imports. So the modules a plain `exec run` loads avoid the heavy ones:
JSON goes through `requiem.json_text` (not `json`, which compiles `re` patterns), commands start
through `requiem.sandbox.proc.spawn` (not `subprocess`), locks come from `_thread` (not
`threading`, with functools and weakref sets), and typing, pathlib and argparse are imported
only where a command needs them. tests/test_layering.py checks what a plain run imports.
A batch of many lines is the other way round: it pays once for importing orjson, which then
encodes every run's JSON several times faster (`requiem.json_text.use_orjson`).
"""

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
