"""CAS v2: a BLAKE3 content-addressed store of immutable, self-describing objects.

One object is one file, `objects/ab/cd/<digest>`: a fixed 512-byte header (magic plus canonical
JSON metadata, space padded) followed by the stored blob (identity or zstd). Creating a file costs
200-400 µs on this machine's disk, so metadata in a second file would halve small-object speed;
one file also makes publication a single atomic rename, so a crash leaves no object or a whole one.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple

from requiem import hashing
from requiem.errors import (
    CAS_INTEGRITY_FAILED,
    INVALID_REQUEST,
    MISSING_INPUT,
    QUOTA_EXCEEDED,
    RequiemError,
)

FORMAT_VERSION = "v2"
HEADER_SIZE = 512
MAGIC = b"RQCAS2 "
ENCODINGS = ("identity", "zstd")
DEFAULT_ZSTD_LEVEL = 3
CHUNK_SIZE = 1 << 20
_PARALLEL_COPY_THRESHOLD = 8 << 20
_COPY_STEP = 64 << 20
_SYNC_FILE_RANGE_WRITE = 2
_libc = None
# A temp file whose writer died is garbage; one whose writer lives is a put in progress.
_STALE_TEMP_SECONDS = 24 * 3600


class ObjectInfo(NamedTuple):
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


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _space_error(exc: OSError, what: str) -> RequiemError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RequiemError(QUOTA_EXCEEDED, f"no space left while {what}", reason="ENOSPC")
    return RequiemError(QUOTA_EXCEEDED if exc.errno == errno.EFBIG else INVALID_REQUEST,
                        f"I/O error while {what}: {exc.strerror}", errno=exc.errno)


class CasWriter:
    """One object being written: feed bytes, then commit (atomic publish) or abort."""

    def __init__(self, cas: "Cas", encoding: str = "identity", level: int = DEFAULT_ZSTD_LEVEL):
        if encoding not in ENCODINGS:
            raise RequiemError(INVALID_REQUEST, f"unknown encoding {encoding!r}; use identity or zstd")
        self._cas = cas
        self.encoding = encoding
        self._path = cas._new_temp_path()
        self._file = open(self._path, "x+b", buffering=0)
        self._file.seek(HEADER_SIZE)
        self._content_hash = hashing.hasher()
        self._stored_hash = hashing.hasher() if encoding == "zstd" else None
        self._compressor = None
        if encoding == "zstd":
            import zstandard

            self._compressor = zstandard.ZstdCompressor(level=level).compressobj()
        self._precomputed_digest: str | None = None
        self.original_size = 0
        self.stored_size = 0
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append content bytes to the object."""
        try:
            self._content_hash.update(data)
            self.original_size += len(data)
            if self._compressor is None:
                self._write_stored(data)
            else:
                self._write_stored(self._compressor.compress(bytes(data)))
        except OSError as exc:
            self.abort()
            raise _space_error(exc, "writing a CAS object") from None

    def _write_stored(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._stored_hash is not None:
            self._stored_hash.update(data)
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written:]
        self.stored_size += len(data)

    def copy_from(self, source: IO[bytes]) -> None:
        """Append a whole file; identity objects copy in the kernel while a thread hashes."""
        size = os.fstat(source.fileno()).st_size
        if self._compressor is not None or size < _PARALLEL_COPY_THRESHOLD or self.original_size:
            buffer = bytearray(CHUNK_SIZE)
            view = memoryview(buffer)
            while n := source.readinto(buffer):  # type: ignore[attr-defined]
                self.write(view[:n])
            return
        before = _identity_stat(source.fileno())
        digest_box: list[str | BaseException] = []

        def hash_source() -> None:
            try:
                digest_box.append(hashing.hash_open_file(source, 0))
            except BaseException as exc:  # re-raised in the writer's thread
                digest_box.append(exc)

        # Hashing (mmap, all cores) and the kernel copy both run outside the GIL, so a large put
        # costs about max(hash, copy) instead of their sum; writeback starts during the copy so
        # the final fsync has little left to flush.
        hasher_thread = threading.Thread(target=hash_source, name="cas-hash")
        hasher_thread.start()
        try:
            copied = _kernel_copy(os.dup(source.fileno()), self._file.fileno(), writeback=True)
        except OSError as exc:
            hasher_thread.join()
            self.abort()
            raise _space_error(exc, "copying into the CAS") from None
        hasher_thread.join()
        result = digest_box[0]
        if isinstance(result, BaseException):
            self.abort()
            raise result
        if _identity_stat(source.fileno()) != before or copied != size:
            self.abort()
            raise RequiemError(INVALID_REQUEST, "the file changed while it was being stored")
        self._precomputed_digest = result
        self.original_size += copied
        self.stored_size += copied

    def fileno(self) -> int:
        """The temp file's descriptor, positioned where content starts (a child may write to it)."""
        return self._file.fileno()

    def written_size(self) -> int:
        """How many content bytes the temp file holds, however they were written."""
        return max(os.fstat(self._file.fileno()).st_size - HEADER_SIZE, 0)

    def read_prefix(self, limit: int) -> bytes:
        """The first `limit` content bytes written so far."""
        return os.pread(self._file.fileno(), limit, HEADER_SIZE)

    def adopt_written(self, limit: int | None = None) -> None:
        """Take whatever another process wrote through fileno() as the content (cut at limit)."""
        if self.encoding != "identity":
            raise ValueError("only identity captures can adopt bytes written by others")
        size = self.written_size()
        if limit is not None and size > limit:
            os.ftruncate(self._file.fileno(), HEADER_SIZE + limit)
            size = limit
        self._precomputed_digest = hashing.hash_open_file(self._file, HEADER_SIZE)  # type: ignore[arg-type]
        self.original_size = self.stored_size = size

    def commit(self) -> ObjectInfo:
        """Finish, fsync and atomically publish the object; return its metadata."""
        try:
            if self._compressor is not None:
                self._write_stored(self._compressor.flush())
            if self._precomputed_digest is not None:
                digest = self._precomputed_digest
            else:
                digest = self._content_hash.hexdigest()
            stored_hash = self._stored_hash.hexdigest() if self._stored_hash else digest
            info = ObjectInfo(
                digest=digest,
                encoding=self.encoding,
                original_size=self.original_size,
                stored_size=self.stored_size,
                stored_blob_hash=stored_hash,
                created_at=_now_iso(),
            )
            final = self._cas.object_path(digest)
            existing = self._cas._read_header_quietly(final)
            if existing is not None:
                self.abort()
                return existing
            self._file.seek(0)
            self._file.write(_encode_header(info))
            os.fsync(self._file.fileno())
            self._file.close()
            self._closed = True
            self._cas._ensure_parent(final)
            os.rename(self._path, final)
            return info
        except OSError as exc:
            self.abort()
            raise _space_error(exc, "publishing a CAS object") from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Discard the temp file; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._file.close()
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "CasWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()


def _identity_stat(fd: int) -> tuple[int, ...]:
    st = os.fstat(fd)
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing a range to disk now (sync_file_range, not waiting)."""
    import ctypes

    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    _libc.sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(length),
                          _SYNC_FILE_RANGE_WRITE)


def _kernel_copy(src_fd: int, dst_fd: int, writeback: bool = False) -> int:
    """Copy src (from its offset) to dst (at its offset), closing src_fd; returns bytes copied.

    copy_file_range keeps the data in the kernel; sendfile-free fallback for filesystems that
    refuse it. With writeback, dirty pages are pushed to disk as the copy goes.
    """
    total = 0
    try:
        try:
            while True:
                start = os.lseek(dst_fd, 0, os.SEEK_CUR)
                n = os.copy_file_range(src_fd, dst_fd, _COPY_STEP)
                if n == 0:
                    return total
                total += n
                if writeback:
                    _start_writeback(dst_fd, start, n)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL) or total:
                raise
        while True:
            chunk = os.read(src_fd, CHUNK_SIZE)
            if not chunk:
                return total
            _write_all(dst_fd, chunk)
            total += len(chunk)
    finally:
        os.close(src_fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _encode_header(info: ObjectInfo) -> bytes:
    body = json.dumps(info.to_json(), sort_keys=True, separators=(",", ":")).encode()
    header = MAGIC + body
    if len(header) >= HEADER_SIZE:
        raise AssertionError("CAS header overflow")
    return header + b" " * (HEADER_SIZE - 1 - len(header)) + b"\n"


def _decode_header(raw: bytes, digest: str, file_size: int) -> ObjectInfo:
    """Parse and cross-check a header against its file name and size; raise ValueError if bad."""
    if len(raw) != HEADER_SIZE or not raw.startswith(MAGIC) or not raw.endswith(b"\n"):
        raise ValueError("header is truncated or has no magic")
    meta = json.loads(raw[len(MAGIC):].rstrip(b" \n"))
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


class Cas:
    """A CAS v2 store rooted at a directory (`<home>/cas` by default)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        hashing.require()
        self.root = Path(root)
        self.base = self.root / FORMAT_VERSION
        self.objects_dir = self.base / "objects"
        self.tmp_dir = self.base / "tmp"
        self._made_dirs: set[Path] = set()
        self.sweep_temp()

    # -- layout -------------------------------------------------------------------------------

    def object_path(self, digest: str) -> Path:
        """Where an object lives (the digest is validated first: no filesystem access before)."""
        check_digest(digest)
        return self.objects_dir / digest[:2] / digest[2:4] / digest

    def _ensure_parent(self, path: Path) -> None:
        parent = path.parent
        if parent not in self._made_dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(parent)

    def _new_temp_path(self) -> Path:
        if self.tmp_dir not in self._made_dirs:
            try:
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _space_error(exc, "creating the CAS temp directory") from None
            self._made_dirs.add(self.tmp_dir)
        return self.tmp_dir / f"{os.getpid()}.{os.urandom(8).hex()}.tmp"

    def sweep_temp(self) -> int:
        """Delete temp files left by writers that died; return how many were removed."""
        removed = 0
        try:
            entries = list(os.scandir(self.tmp_dir))
        except FileNotFoundError:
            return 0
        now = time.time()
        for entry in entries:
            pid_text = entry.name.split(".", 1)[0]
            alive = pid_text.isdigit() and _pid_alive(int(pid_text))
            try:
                old = now - entry.stat().st_mtime > _STALE_TEMP_SECONDS
            except FileNotFoundError:
                continue
            if alive and not old:
                continue
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    # -- writing ------------------------------------------------------------------------------

    def writer(self, encoding: str = "identity", level: int = DEFAULT_ZSTD_LEVEL) -> CasWriter:
        """Start writing one object incrementally (bounded memory)."""
        return CasWriter(self, encoding, level)

    def put_bytes(self, data: bytes, encoding: str = "identity",
                  level: int = DEFAULT_ZSTD_LEVEL) -> ObjectInfo:
        """Store a buffer; an object already present is returned as is."""
        digest = hashing.hash_bytes(data)
        final = self.object_path(digest)
        existing = self._read_header_quietly(final)
        if existing is not None:
            return existing
        if encoding != "identity":
            with self.writer(encoding, level) as w:
                w.write(data)
                return w.commit()
        # Small identity objects skip the streaming writer: one create, one write, one rename.
        info = ObjectInfo(digest, "identity", len(data), len(data), digest, _now_iso())
        temp = self._new_temp_path()
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, _encode_header(info) + data if len(data) < CHUNK_SIZE else
                           _encode_header(info))
                if len(data) >= CHUNK_SIZE:
                    _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._ensure_parent(final)
            os.rename(temp, final)
        except OSError as exc:
            _unlink_quietly(temp)
            raise _space_error(exc, "writing a CAS object") from None
        return info

    def put_file(self, path: str | os.PathLike[str], encoding: str = "identity",
                 level: int = DEFAULT_ZSTD_LEVEL) -> ObjectInfo:
        """Store a regular file by streaming it (never whole in memory)."""
        source_path = Path(path)
        try:
            source = open(source_path, "rb")
        except FileNotFoundError:
            raise RequiemError(MISSING_INPUT, f"no such file: {source_path}") from None
        except IsADirectoryError:
            raise RequiemError(INVALID_REQUEST, f"is a directory, not a file: {source_path}") from None
        except PermissionError:
            raise RequiemError(MISSING_INPUT, f"cannot read {source_path}: permission denied") from None
        with source:
            if not os.path.isfile(source_path):
                raise RequiemError(INVALID_REQUEST, f"not a regular file: {source_path}")
            with self.writer(encoding, level) as w:
                try:
                    w.copy_from(source)
                except IsADirectoryError:
                    raise RequiemError(INVALID_REQUEST, f"is a directory: {source_path}") from None
                return w.commit()

    # -- reading ------------------------------------------------------------------------------

    def _read_header_quietly(self, path: Path) -> ObjectInfo | None:
        """The header of an existing, well-formed object, or None (absent or malformed)."""
        try:
            with open(path, "rb") as handle:
                raw = handle.read(HEADER_SIZE)
                size = os.fstat(handle.fileno()).st_size
            return _decode_header(raw, path.name, size)
        except (OSError, ValueError, TypeError):
            return None

    def contains(self, digest: str) -> bool:
        """True when an object with this digest is present (content not checked)."""
        return self.object_path(digest).is_file()

    def info(self, digest: str) -> ObjectInfo:
        """The metadata of an object; missing_input if absent, cas_integrity_failed if malformed."""
        path = self.object_path(digest)
        try:
            with open(path, "rb") as handle:
                raw = handle.read(HEADER_SIZE)
                size = os.fstat(handle.fileno()).st_size
        except FileNotFoundError:
            raise RequiemError(MISSING_INPUT, f"no object {digest} in the CAS", digest=digest) from None
        try:
            return _decode_header(raw, digest, size)
        except (ValueError, TypeError) as exc:
            raise RequiemError(
                CAS_INTEGRITY_FAILED, f"object {digest}: bad metadata: {exc}", digest=digest
            ) from None

    def _open_checked(self, digest: str) -> tuple[IO[bytes], ObjectInfo]:
        info = self.info(digest)
        handle = open(self.object_path(digest), "rb")
        try:
            stored_hash = hashing.hash_open_file(handle, HEADER_SIZE)
        except BaseException:
            handle.close()
            raise
        if stored_hash != info.stored_blob_hash:
            handle.close()
            raise RequiemError(
                CAS_INTEGRITY_FAILED, f"object {digest}: stored blob hash mismatch", digest=digest
            )
        handle.seek(HEADER_SIZE)
        return handle, info

    def iter_content(self, digest: str) -> Iterator[bytes]:
        """Yield an object's content in chunks; raises cas_integrity_failed if it reads wrong."""
        handle, info = self._open_checked(digest)
        with handle:
            if info.encoding == "identity":
                # The stored hash is the content digest here: already checked in full.
                while chunk := handle.read(CHUNK_SIZE):
                    yield chunk
                return
            import zstandard

            check = hashing.hasher()
            size = 0
            try:
                reader = zstandard.ZstdDecompressor().stream_reader(handle)
                while chunk := reader.read(CHUNK_SIZE):
                    check.update(chunk)
                    size += len(chunk)
                    yield chunk
            except zstandard.ZstdError as exc:
                raise RequiemError(
                    CAS_INTEGRITY_FAILED, f"object {digest}: zstd: {exc}", digest=digest
                ) from None
            if check.hexdigest() != digest or size != info.original_size:
                raise RequiemError(
                    CAS_INTEGRITY_FAILED, f"object {digest}: content digest mismatch", digest=digest
                )

    def read_bytes(self, digest: str, limit: int | None = None) -> bytes:
        """An object's whole content, checked (or its first `limit` bytes, still fully checked)."""
        parts: list[bytes] = []
        kept = 0
        for chunk in self.iter_content(digest):
            if limit is None or kept < limit:
                take = chunk if limit is None else chunk[: limit - kept]
                parts.append(take)
                kept += len(take)
        return b"".join(parts)

    def get_to_file(self, digest: str, out: str | os.PathLike[str]) -> ObjectInfo:
        """Write an object's checked content to `out` atomically (no partial file on failure)."""
        target = Path(out)
        if target.is_dir():
            raise RequiemError(INVALID_REQUEST, f"--out is a directory: {target}")
        temp = target.with_name(f".{target.name}.{os.urandom(6).hex()}.part")
        info = self.info(digest)
        try:
            with open(temp, "xb") as sink:
                if info.encoding == "identity":
                    handle, info = self._open_checked(digest)
                    with handle:
                        _kernel_copy(os.dup(handle.fileno()), sink.fileno())
                else:
                    for chunk in self.iter_content(digest):
                        sink.write(chunk)
            os.rename(temp, target)
        except OSError as exc:
            _unlink_quietly(temp)
            raise _space_error(exc, f"writing {target}") from None
        except BaseException:
            _unlink_quietly(temp)
            raise
        return info

    # -- whole-store operations ---------------------------------------------------------------

    def list_digests(self) -> Iterator[str]:
        """Every object digest present, in no particular order."""
        try:
            level1 = list(os.scandir(self.objects_dir))
        except FileNotFoundError:
            return
        for d1 in level1:
            if not d1.is_dir():
                continue
            for d2 in os.scandir(d1.path):
                if not d2.is_dir():
                    continue
                for entry in os.scandir(d2.path):
                    if hashing.is_digest(entry.name):
                        yield entry.name

    def list_objects(self) -> Iterator[ObjectInfo | tuple[str, str]]:
        """Each object's metadata, or (digest, reason) where its header is malformed."""
        for digest in self.list_digests():
            try:
                yield self.info(digest)
            except RequiemError as exc:
                yield (digest, exc.message)

    def remove(self, digest: str) -> bool:
        """Delete an object (for GC); True if it existed."""
        try:
            os.unlink(self.object_path(digest))
            return True
        except FileNotFoundError:
            return False

    def verify_object(self, digest: str) -> str | None:
        """None when the object reads back intact, else the reason it does not."""
        try:
            if self.info(digest).encoding == "identity":
                # The stored-blob hash of an identity object is its content digest.
                handle, _ = self._open_checked(digest)
                handle.close()
                return None
            for _ in self.iter_content(digest):
                pass
        except RequiemError as exc:
            return exc.message
        return None

    def verify(self, sample: int | None = None, seed: int | None = None) -> dict[str, Any]:
        """Check every object (or a random sample of N) in full; list the corrupt ones."""
        digests = sorted(self.list_digests())
        total = len(digests)
        if sample is not None and sample < total:
            import random

            digests = random.Random(seed).sample(digests, sample)
        corrupt = []
        checked_bytes = 0
        for digest in digests:
            reason = self.verify_object(digest)
            if reason is not None:
                corrupt.append({"digest": digest, "reason": reason})
            else:
                checked_bytes += self.object_path(digest).stat().st_size - HEADER_SIZE
        return {
            "ok": not corrupt,
            "objects_total": total,
            "objects_checked": len(digests),
            "bytes_checked": checked_bytes,
            "mode": "all" if sample is None else "sample",
            "corrupt": corrupt,
        }

    def stats(self, top: int = 10) -> dict[str, Any]:
        """Object count, original and stored bytes, compression ratio and the N largest objects."""
        objects = 0
        original = 0
        stored = 0
        by_encoding: dict[str, int] = {}
        malformed = []
        infos: list[ObjectInfo] = []
        for item in self.list_objects():
            if not isinstance(item, ObjectInfo):
                malformed.append({"digest": item[0], "reason": item[1]})
                continue
            objects += 1
            original += item.original_size
            stored += item.stored_size
            by_encoding[item.encoding] = by_encoding.get(item.encoding, 0) + 1
            infos.append(item)
        infos.sort(key=lambda i: (-i.original_size, i.digest))
        return {
            "objects": objects,
            "original_bytes": original,
            "stored_bytes": stored,
            "compression_ratio": round(original / stored, 4) if stored else 1.0,
            "by_encoding": by_encoding,
            "malformed": malformed,
            "top": [i.to_json() for i in infos[: max(top, 0)]],
        }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
