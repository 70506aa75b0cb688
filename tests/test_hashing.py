"""BLAKE3 hashing: the seed vectors and agreement with Debian's b3sum."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from requiem import hashing

B3SUM = shutil.which("b3sum")
needs_b3sum = pytest.mark.skipif(B3SUM is None, reason="b3sum (Debian package b3sum) not installed")


def test_seed_vectors() -> None:
    assert hashing.hash_bytes(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert hashing.hash_bytes(b"hello") == "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"


def test_official_1024_byte_vector() -> None:
    data = bytes(i % 251 for i in range(1024))
    assert hashing.hash_bytes(data) == "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"


def test_status_reports_a_working_rust_backend() -> None:
    status = hashing.status()
    assert status["hash_available"] is True
    assert status["hash_primitive"] == "blake3"
    assert status["hash_backend"] not in ("fallback", "unavailable")


def test_stream_chunks_and_file_agree(tmp_path: Path) -> None:
    data = os.urandom(3 * hashing.CHUNK_SIZE + 17)
    path = tmp_path / "f"
    path.write_bytes(data)
    expected = hashing.hash_bytes(data)
    assert hashing.hash_stream(io.BytesIO(data)) == (expected, len(data))
    assert hashing.hash_chunks([data[:5], data[5:]]) == expected
    assert hashing.hash_file(path) == expected
    assert hashing.hash_file(path, offset=10) == hashing.hash_bytes(data[10:])


@pytest.mark.parametrize(
    "digest, ok",
    [("a" * 64, True), ("A" * 64, False), ("a" * 63, False), ("g" * 64, False), (None, False)],
)
def test_digest_syntax(digest: object, ok: bool) -> None:
    assert hashing.is_digest(digest) is ok


@needs_b3sum
@pytest.mark.parametrize(
    "size", [0, 1, 1023, 1024, 1025, 65535, 65536, 65537, (1 << 20) + 7, 100 * (1 << 20)]
)
def test_agrees_with_b3sum(tmp_path: Path, size: int) -> None:
    path = tmp_path / f"f{size}"
    with open(path, "wb") as handle:
        handle.write(os.urandom(min(size, 1 << 20)) * (size // (1 << 20) or 1))
        handle.truncate(size)
    expected = subprocess.run([B3SUM, "--no-names", str(path)], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert hashing.hash_file(path) == expected
    assert hashing.hash_bytes(path.read_bytes()) == expected


def test_the_empty_digest_constant_is_blake3_of_nothing() -> None:
    import blake3

    assert hashing.EMPTY_DIGEST == hashing.hash_bytes(b"") == blake3.blake3(b"").hexdigest()
