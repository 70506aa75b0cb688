"""Writing one CAS object: stream or kernel-copy into a temp file, then fsync and rename."""

from __future__ import annotations

import errno
import os

from requiem import hashing
from requiem.cas_format import (
    CHUNK_SIZE,
    DEFAULT_ZSTD_LEVEL,
    ENCODINGS,
    HEADER_SIZE,
    ObjectInfo,
    encode_header,
    space_error,
)
from requiem.clock import utc_now_iso
from requiem.errors import INVALID_REQUEST, RequiemError

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import IO, Any

    from requiem.cas import Cas

_PARALLEL_COPY_THRESHOLD = 8 << 20
_COPY_STEP = 64 << 20
_SYNC_FILE_RANGE_WRITE = 2
_libc = None


class CasWriter:
    """One object being written: feed bytes, then commit (atomic publish) or abort."""

    def __init__(self, cas: "Cas", encoding: str = "identity", level: int = DEFAULT_ZSTD_LEVEL):
        if encoding not in ENCODINGS:
            raise RequiemError(INVALID_REQUEST, f"unknown encoding {encoding!r}; use identity or zstd")
        self._cas = cas
        self.encoding = encoding
        path, self._file = cas._open_temp()
        self._path: str | None = path
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
        # Whether the temp file may hold bytes (from us or a process given fileno()).
        self._dirty = False

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
            raise space_error(exc, "writing a CAS object") from None

    def _write_stored(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._dirty = True
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
        import threading  # only for large files: a cold start does without it

        self._dirty = True
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
            copied = kernel_copy(os.dup(source.fileno()), self._file.fileno(), writeback=True)
        except OSError as exc:
            hasher_thread.join()
            self.abort()
            raise space_error(exc, "copying into the CAS") from None
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

    def adopt_written(self, limit: int | None = None, detach: bool = False,
                      written: int | None = None) -> None:
        """Take whatever another process wrote through fileno() as the content (cut at limit).

        detach: a process may still hold the file (a stray of the run), so the object is
        published from a copy it cannot reach, never from the file it can still write.
        written: written_size() as the caller just read it, once the writers are gone.
        """
        if self.encoding != "identity":
            raise ValueError("only identity captures can adopt bytes written by others")
        size = written = self.written_size() if written is None or detach else written
        # A file a child wrote nothing to is still empty (a stray's late bytes are detached).
        self._dirty = bool(written) or detach
        if limit is not None and size > limit:
            size = limit
        if detach:
            size = self._detach(size)
        elif size < written:
            os.ftruncate(self._file.fileno(), HEADER_SIZE + size)
        # Most captures are empty (stderr above all): their digest needs no file read.
        self._precomputed_digest = (hashing.EMPTY_DIGEST if size == 0 else
                                    hashing.hash_open_file(self._file, HEADER_SIZE))  # type: ignore[arg-type]
        self.original_size = self.stored_size = size

    def _detach(self, size: int) -> int:
        """Copy up to `size` content bytes into a temp file of our own, dropping the shared one."""
        path, copy = self._cas._open_temp()
        source = self._file.fileno()
        try:
            # pread at explicit offsets: the shared file offset is the stray's, not ours to move.
            done = 0
            while done < size:
                chunk = os.pread(source, min(CHUNK_SIZE, size - done), HEADER_SIZE + done)
                if not chunk:
                    break
                os.pwrite(copy.fileno(), chunk, HEADER_SIZE + done)
                done += len(chunk)
            os.ftruncate(copy.fileno(), HEADER_SIZE + done)
        except BaseException:
            copy.close()
            self._cas._discard_temp(path)
            raise
        self._file.close()
        self._cas._discard_temp(self._path)
        self._file, self._path = copy, path
        return done

    def commit(self) -> ObjectInfo:
        """Finish, fsync and atomically publish the object; return its metadata."""
        try:
            if self._compressor is not None:
                self._write_stored(self._compressor.flush())
            if self._precomputed_digest is not None:
                digest = self._precomputed_digest
            else:
                digest = self._content_hash.hexdigest()
            final = self._cas._object_file(digest)
            existing = self._cas._existing(digest, final)
            if existing is not None:
                self._recycle()
                return existing
            stored_hash = self._stored_hash.hexdigest() if self._stored_hash else digest
            info = ObjectInfo(
                digest=digest,
                encoding=self.encoding,
                original_size=self.original_size,
                stored_size=self.stored_size,
                stored_blob_hash=stored_hash,
                created_at=utc_now_iso(),
            )
            self._file.seek(0)
            self._file.write(encode_header(info))
            self._cas._sync_object(self._file.fileno())
            self._file.close()
            self._closed = True
            self._cas._publish(self._path, final)
            self._path = None
            self._cas._remember(info)
            return info
        except OSError as exc:
            self.abort()
            raise space_error(exc, "publishing a CAS object") from None
        except BaseException:
            self.abort()
            raise

    def _recycle(self) -> None:
        """Give the unneeded temp file back to the store for reuse, else discard it.

        Safe: the file is ours alone (a capture a stray of the run may hold was detached).
        """
        if not self._closed and self._path is not None and self._cas._recycle_temp(
                self._path, self._file, empty=not self._dirty):
            self._closed = True
            self._path = None
            return
        self.abort()

    def abort(self) -> None:
        """Discard the temp file; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._file.close()
        if self._path is None:
            return  # published or already removed
        self._cas._discard_temp(self._path)
        self._path = None

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


def kernel_copy(src_fd: int, dst_fd: int, writeback: bool = False) -> int:
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
            write_all(dst_fd, chunk)
            total += len(chunk)
    finally:
        os.close(src_fd)


def temp_path(tmp_dir: str) -> str:
    """A new temp file's name: its writer's pid first, so a sweep spares it while that lives."""
    return os.path.join(tmp_dir, f"{os.getpid()}.{os.urandom(8).hex()}.tmp")


def publish(temp: str, final: str) -> None:
    """Rename a finished temp file to its object path, making the fan-out directories the first
    time one is needed: most exist, so the rename goes first and costs nothing more."""
    try:
        os.rename(temp, final)
    except FileNotFoundError:
        parent = os.path.dirname(final)
        try:
            os.mkdir(parent)
        except FileNotFoundError:
            os.makedirs(parent, exist_ok=True)
        except FileExistsError:
            pass  # another writer made it: the rename can go
        os.rename(temp, final)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
