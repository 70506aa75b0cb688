"""The CAS v2 object format: a fixed 512-byte header of metadata, then the stored blob.

One object is one file, `objects/ab/cd/<digest>`: the magic `RQCAS2 `, canonical JSON metadata
space-padded to 512 bytes, then the blob (identity or zstd). Creating a file costs 200-400 µs on
this machine's disk, so metadata in a second file would halve small-object speed; one file also
makes publication a single atomic rename, so a crash leaves no object or a whole one.
"""

from __future__ import annotations

import errno

from requiem import hashing, json_text
from requiem.errors import INVALID_REQUEST, QUOTA_EXCEEDED, RequiemError
from requiem.tuples import named_tuple

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

FORMAT_VERSION = "v2"
HEADER_SIZE = 512
MAGIC = b"RQCAS2 "
ENCODINGS = ("identity", "zstd")
DEFAULT_ZSTD_LEVEL = 3
CHUNK_SIZE = 1 << 20


@named_tuple
class ObjectInfo:
    """The metadata of one stored object."""

    digest: str
    encoding: str
    original_size: int
    stored_size: int
    stored_blob_hash: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return self._asdict()


def check_digest(digest: object) -> str:
    """Return digest if it is 64 lowercase hex characters, else raise invalid_request."""
    if not hashing.is_digest(digest):
        shown = repr(digest)[:80]
        raise RequiemError(
            INVALID_REQUEST, f"not a BLAKE3 digest (64 lowercase hex characters): {shown}"
        )
    return digest  # type: ignore[return-value]


def encode_header(info: ObjectInfo) -> bytes:
    # json.dumps(info.to_json(), sort_keys=True, separators=(",", ":")) spelled out: every put
    # pays for this, and the fields and their order never change.
    text = json_text.ascii_string
    body = (f'{{"created_at":{text(info.created_at)},"digest":{text(info.digest)},'
            f'"encoding":{text(info.encoding)},"original_size":{int(info.original_size)},'
            f'"stored_blob_hash":{text(info.stored_blob_hash)},'
            f'"stored_size":{int(info.stored_size)}}}').encode()
    header = MAGIC + body
    if len(header) >= HEADER_SIZE:
        raise AssertionError("CAS header overflow")
    return header + b" " * (HEADER_SIZE - 1 - len(header)) + b"\n"


def decode_header(raw: bytes, digest: str, file_size: int) -> ObjectInfo:
    """Parse and cross-check a header against its file name and size; raise ValueError if bad."""
    if len(raw) != HEADER_SIZE or not raw.startswith(MAGIC) or not raw.endswith(b"\n"):
        raise ValueError("header is truncated or has no magic")
    meta = json_text.loads(raw[len(MAGIC):].rstrip(b" \n").decode("utf-8", "surrogatepass"))
    info = ObjectInfo(**meta)
    if info.digest != digest:
        raise ValueError("header digest does not match the object name")
    if info.encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {info.encoding!r}")
    if info.stored_size != file_size - HEADER_SIZE:
        raise ValueError(
            f"stored_size {info.stored_size} but the blob holds {file_size - HEADER_SIZE} bytes"
        )
    if info.encoding == "identity" and (
        info.stored_size != info.original_size or info.stored_blob_hash != digest
    ):
        raise ValueError("identity object whose sizes or hashes disagree")
    return info


def space_error(exc: OSError, what: str) -> RequiemError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RequiemError(QUOTA_EXCEEDED, f"no space left while {what}", reason="ENOSPC")
    return RequiemError(QUOTA_EXCEEDED if exc.errno == errno.EFBIG else INVALID_REQUEST,
                        f"I/O error while {what}: {exc.strerror}", errno=exc.errno)
