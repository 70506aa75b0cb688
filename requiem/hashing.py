"""BLAKE3-256 of bytes, streams and files, failing closed when BLAKE3 is missing or wrong."""

from __future__ import annotations

import mmap
import os

from requiem.errors import HASH_UNAVAILABLE, RequiemError

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import IO, Any, Iterable

DIGEST_HEX_LENGTH = 64
# The seeds' vectors; checked once per process before any digest is trusted.
SELF_TEST_VECTORS = {
    b"": "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
    b"hello": "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f",
}
# BLAKE3-256 of no bytes: most captures are empty, and their digest needs no hashing.
EMPTY_DIGEST = SELF_TEST_VECTORS[b""]
# Below this size one thread is faster than waking the rayon pool.
_MULTITHREAD_THRESHOLD = 4 << 20
CHUNK_SIZE = 1 << 20

_HEX = frozenset("0123456789abcdef")

try:
    import blake3 as _blake3_module

    _import_error: str | None = None
except Exception as exc:  # any import failure means "no BLAKE3": fail closed
    _blake3_module = None
    _import_error = f"{type(exc).__name__}: {exc}"

_status: dict[str, Any] | None = None


def status() -> dict[str, Any]:
    """The hash facts `requiem health` reports, after running the self-test vectors once."""
    global _status
    if _status is not None:
        return _status
    if _blake3_module is None:
        _status = _unavailable(f"blake3 module cannot be imported ({_import_error})")
        return _status
    try:
        for data, expected in SELF_TEST_VECTORS.items():
            got = _blake3_module.blake3(data).hexdigest()
            if got != expected:
                _status = _unavailable(f"self-test vector {data!r} gave {got}, expected {expected}")
                return _status
    except Exception as exc:
        _status = _unavailable(f"self-test raised {type(exc).__name__}: {exc}")
        return _status
    _status = {
        "hash_primitive": "blake3",
        # The PyPI `blake3` package wraps the official Rust crate (SIMD + rayon threads).
        "hash_backend": "blake3-rust",
        "hash_version": getattr(_blake3_module, "__version__", "unknown"),
        "hash_available": True,
        "compat_warning": False,
    }
    return _status


def _unavailable(reason: str) -> dict[str, Any]:
    return {
        "hash_primitive": "blake3",
        "hash_backend": "unavailable",
        "hash_version": None,
        "hash_available": False,
        "compat_warning": True,
        "reason": reason,
    }


def require() -> None:
    """Raise hash_unavailable_blake3 unless BLAKE3 is present and passes its vectors."""
    facts = status()
    if not facts["hash_available"]:
        raise RequiemError(HASH_UNAVAILABLE, f"BLAKE3 is unavailable: {facts['reason']}")


def hasher(size_hint: int = 0) -> Any:
    """A fresh incremental BLAKE3 hasher, multithreaded when the input is large."""
    require()
    if size_hint >= _MULTITHREAD_THRESHOLD:
        return _blake3_module.blake3(max_threads=_blake3_module.blake3.AUTO)
    return _blake3_module.blake3()


def hash_bytes(data: bytes | bytearray | memoryview) -> str:
    """Lowercase hex BLAKE3-256 of a buffer."""
    if _status is not None and _status["hash_available"] and len(data) < _MULTITHREAD_THRESHOLD:
        return _blake3_module.blake3(data).hexdigest()  # a batch hashes ~6 small buffers a run
    return hasher(len(data)).update(data).hexdigest()


def hash_chunks(chunks: Iterable[bytes]) -> str:
    """Lowercase hex BLAKE3-256 of the concatenation of chunks."""
    h = hasher()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def hash_stream(stream: IO[bytes]) -> tuple[str, int]:
    """BLAKE3 of everything left in a binary stream, with its byte count; bounded memory."""
    h = hasher()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    total = 0
    while True:
        n = stream.readinto(buffer)  # type: ignore[attr-defined]
        if not n:
            break
        h.update(view[:n])
        total += n
    return h.hexdigest(), total


def hash_file(path: str | os.PathLike[str], offset: int = 0) -> str:
    """BLAKE3 of a file from `offset` to its end, through mmap and all cores when large."""
    with open(path, "rb") as handle:
        return hash_open_file(handle, offset)


def hash_open_file(handle: IO[bytes], offset: int = 0) -> str:
    """BLAKE3 of an open file from `offset` to its end (mmap; multithreaded when large)."""
    size = os.fstat(handle.fileno()).st_size - offset
    if size <= 0:
        return hasher().hexdigest()
    if size < CHUNK_SIZE:
        handle.seek(offset)
        return hash_bytes(handle.read())
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        with memoryview(mapped) as view:
            try:
                return hasher(size).update(view[offset:]).hexdigest()
            finally:
                view.release()


def is_digest(text: object) -> bool:
    """True when text is exactly 64 lowercase hex characters."""
    return isinstance(text, str) and len(text) == DIGEST_HEX_LENGTH and _HEX.issuperset(text)
