"""A batch's pack of result documents: one CAS object, JSON lines, one run's result each.

A run's result document holds its own timestamps, so no two are alike: stored one object per
run, a batch would create a file (and in a young store a fan-out directory) for every run. A
group commit stores its group's documents as one pack instead; each record names the pack
(`result_pack`) beside the document's own digest (`result_object`), which finds it there.
"""

from __future__ import annotations

from requiem.errors import CAS_INTEGRITY_FAILED, RequiemError
from requiem.hashing import hash_bytes

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from requiem.cas import Cas

# A pack holds documents up to this size (a larger one, with long inline output, is an object
# of its own), and at most MAX_PACK_BYTES of them: a pack is read whole to show one document.
MAX_PACKED_DOCUMENT = 16 << 10
MAX_PACK_BYTES = 4 << 20
assert MAX_PACKED_DOCUMENT < MAX_PACK_BYTES  # a packable document always fits in a pack


def pack(documents: list[bytes]) -> bytes:
    """The pack of these documents (compact JSON, which never holds a raw newline)."""
    return b"\n".join(documents) + b"\n"


def split(documents: list[bytes]) -> list[list[bytes]]:
    """The documents in order, in as few packs as MAX_PACK_BYTES allows (none for none)."""
    packs: list[list[bytes]] = []
    size = MAX_PACK_BYTES
    for document in documents:
        if size + len(document) + 1 > MAX_PACK_BYTES:
            packs.append([])
            size = 0
        packs[-1].append(document)
        size += len(document) + 1
    return packs


def named_in_line(line: bytes, document: str | None, pack: str | None) -> bytes:
    """A results line with `pack`, the pack holding its document (`document`, the line's own
    `result_object`), named before that key; as it is without a pack.

    The key is found by its value, after a `{` or a `,`: a key of a nested object that merely
    ends in `result_object` (an output path, say) has an escaped quote before it, and no other
    value in the line is this document's own digest.
    """
    if not document or pack is None:
        return line
    key = b'"result_object":"%s"' % document.encode()
    at = line.rfind(key)
    while at > 0 and line[at - 1] not in b",{":
        at = line.rfind(key, 0, at)
    if at < 1:
        return line
    return b'%s"result_pack":"%s",%s' % (line[:at], pack.encode(), line[at:])


def find(packed: bytes, digest: str) -> bytes | None:
    """The document in a pack whose BLAKE3 is `digest`, or None."""
    for line in packed.split(b"\n"):
        if line and hash_bytes(line) == digest:
            return line
    return None


def read_result(cas: Cas, result_object: str, result_pack: str | None) -> bytes:
    """A run's stored result document, from its pack or as an object of its own; checked
    either way (the pack as an object, the document by its digest)."""
    if result_pack is None:
        return cas.read_bytes(result_object)
    document = find(cas.read_bytes(result_pack, limit=MAX_PACK_BYTES), result_object)
    if document is None:
        raise RequiemError(CAS_INTEGRITY_FAILED,
                           f"result {result_object} is not in its pack {result_pack}",
                           digest=result_object)
    return document
