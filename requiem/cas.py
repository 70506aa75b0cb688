"""CAS v2: a BLAKE3 content-addressed store of immutable, self-describing objects.

One class, past 500 lines, on purpose: a group commit's deferred writes (unsynced objects, small
objects waiting in memory, temp files made ahead) hook into every put, publish and lookup, and
split into a module of their own they would spread one object's invariants over two files.
"""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock: see requiem/__init__.py on imports
import os
import time

from requiem import cas_sync, hashing
from requiem.cas_format import (
    CHUNK_SIZE,
    DEFAULT_ZSTD_LEVEL,
    ENCODINGS,
    FORMAT_VERSION,
    HEADER_SIZE,
    ObjectInfo,
    check_digest,
    decode_header,
    encode_header,
    space_error,
)
from requiem.cas_writer import CasWriter, kernel_copy, publish, pwrite_all, temp_path
from requiem.clock import utc_now_iso
from requiem.errors import CAS_INTEGRITY_FAILED, INVALID_REQUEST, MISSING_INPUT, RequiemError

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from pathlib import Path
    from typing import IO, Any, Iterator

    from requiem.object_writer import ObjectWriter

__all__ = ["Cas", "CasWriter", "ObjectInfo", "check_digest", "ENCODINGS", "HEADER_SIZE"]

# Objects a group commit may hold unsynced at once (one descriptor each).
MAX_DEFERRED = 256
# Bytes of small objects a group commit may hold in memory before its flusher writes them.
MAX_UNWRITTEN_BYTES = 16 << 20
# Empty temp files a group commit keeps ready (each holds a descriptor).
MAX_SPARE_TEMPS = 64
_SPARES_AT_LEAST = 4
# A temp file whose writer died is garbage; one whose writer lives is a put in progress.
_STALE_TEMP_SECONDS = 24 * 3600


class Cas:
    """A CAS v2 store rooted at a directory (`<home>/cas` by default)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        hashing.require()
        # Strings, not Paths: the engine's cold path never imports pathlib (see requiem.home).
        self.root = os.fspath(root)
        self.base = os.path.join(self.root, FORMAT_VERSION)
        self.objects_dir = os.path.join(self.base, "objects")
        self.tmp_dir = os.path.join(self.base, "tmp")
        self._objects_prefix = f"{self.objects_dir}/"
        self._made_dirs: set[str] = set()
        # None: every put fsyncs before it publishes. A list: a group commit is on, and holds
        # duplicated descriptors of objects published unsynced until sync_deferred().
        self._deferred: list[int] | None = None
        # With a group commit where syncfs(2) can be trusted: a descriptor of the objects'
        # directory, and how many objects were published since the last sync (none kept open).
        self._syncfs_fd: int | None = None
        self._unsynced = 0
        self._deferred_lock = _thread.allocate_lock()
        # Objects this instance stored or found intact: a later put of the same bytes checks
        # only that the file is still there at its size (a stat, not an open and a parse).
        self._known: dict[str, ObjectInfo] = {}
        # With a group commit on, its flusher thread makes temp files ahead and removes
        # discarded ones behind (a create or an unlink costs ~0.2 ms here), off the runs' path.
        self._spare_temps: list[tuple[str, IO[bytes]]] = []
        self._temps_used = 0  # temp files taken and not given back since the last housekeep()
        self._discarded: list[str] = []
        # Small objects put but not yet on disk, digest -> (header and content, final path):
        # with a group commit its flusher writes them, so a batch's runs never wait on a file
        # creation or a new fan-out directory (see MAX_UNWRITTEN_BYTES). Until then a lookup of
        # one of these digests in this process writes it first (see _object_file).
        self._unwritten: dict[str, tuple[bytes, str]] = {}
        self._unwritten_bytes = 0
        self._write_lock = _thread.allocate_lock()
        # The group commit's helper process that writes them, where one could be forked.
        self._object_writer: ObjectWriter | None = None
        self.sweep_temp()

    # -- layout -------------------------------------------------------------------------------

    def object_path(self, digest: str) -> Path:
        """Where an object lives (the digest is validated first: no filesystem access before)."""
        from pathlib import Path

        return Path(self._object_file(digest))

    def _object_file(self, digest: str) -> str:
        """object_path as a string, for the put path (a Path costs more than the stat it feeds)."""
        check_digest(digest)
        if self._unwritten and digest in self._unwritten:
            self._write_pending(digest)
        return f"{self._objects_prefix}{digest[:2]}/{digest[2:4]}/{digest}"

    def _publish(self, temp: str, final: str) -> None:
        """Rename a finished temp file to its object path (see cas_writer.publish)."""
        publish(temp, final)
        if self._syncfs_fd is not None:
            with self._deferred_lock:
                self._unsynced += 1  # the group's next syncfs covers its bytes and its name

    def _leave_to_flusher(self, digest: str, stored: bytes, final: str) -> bool:
        """Queue a small object for the group commit's flusher to write; False without one."""
        with self._deferred_lock:
            if (self._deferred is None or len(self._unwritten) >= MAX_DEFERRED
                    or self._unwritten_bytes + len(stored) > MAX_UNWRITTEN_BYTES):
                return False
            self._unwritten[digest] = (stored, final)  # never waiting already: see put_bytes
            self._unwritten_bytes += len(stored)
            return True

    def _write_pending(self, only: str | None = None) -> None:
        """Write and publish the objects left to the flusher (or just `only`), from any thread.

        One that cannot be written (or whose write is interrupted) stays waiting: the flush
        that would make its record durable writes it or fails.
        """
        if only is None and self._object_writer is not None:
            from requiem.object_writer import HelperUnavailable  # loaded with the helper

            try:
                self._write_pending_through(self._object_writer)
                return
            except HelperUnavailable:  # it never set itself up: this thread writes, as without one
                with self._deferred_lock:
                    writer, self._object_writer = self._object_writer, None
                if writer is not None:
                    writer.close()
        failure: OSError | None = None
        for digest in [only] if only is not None else list(self._unwritten):
            with self._write_lock:
                entry = self._unwritten.get(digest)
                if entry is None:
                    continue  # the other thread wrote it meanwhile
                try:
                    # A temp file of its own, not a spare: those are kept for the runs' captures.
                    self._write_object((entry[0],), entry[1], self._new_temp_path())
                except OSError as exc:
                    failure = failure or exc
                    continue
                self._forget_written([(digest, entry)])
        if failure is not None:
            raise space_error(failure, "writing a CAS object") from None

    def _write_pending_through(self, writer: ObjectWriter) -> None:
        """_write_pending by the helper process: one round trip for every waiting object."""
        from requiem.object_writer import HelperUnavailable  # loaded with the helper

        with self._write_lock:
            waiting = list(self._unwritten.items())
            if not waiting:
                return
            try:
                writer.write([entry for _, entry in waiting])
            except HelperUnavailable:
                raise
            except OSError as exc:
                raise space_error(exc, "writing a CAS object") from None
            self._forget_written(waiting)
            if self._syncfs_fd is not None:
                with self._deferred_lock:
                    self._unsynced += len(waiting)  # the helper published them unsynced

    def _forget_written(self, written: list[tuple[str, tuple[bytes, str]]]) -> None:
        """Drop objects now in place from the waiting ones (under _write_lock): only now, so a
        lookup that misses one there finds its file."""
        for digest, _ in written:
            del self._unwritten[digest]
        with self._deferred_lock:
            self._unwritten_bytes -= sum(len(stored) for _, (stored, _) in written)

    def _write_object(self, parts: tuple[bytes, ...], final: str, temp: str,
                      handle: IO[bytes] | None = None) -> None:
        """Write an object's stored bytes (header first) to a temp file and publish it."""
        try:
            if handle is None:
                handle = open(temp, "x+b", buffering=0)
            try:
                # At explicit offsets: a recycled spare's offset is wherever its last user left it.
                offset = 0
                for part in parts:
                    pwrite_all(handle.fileno(), part, offset)
                    offset += len(part)
                self._sync_object(handle.fileno())
            finally:
                handle.close()
            self._publish(temp, final)
        except BaseException:
            _unlink_quietly(temp)
            raise

    def _new_temp_path(self) -> str:
        if self.tmp_dir not in self._made_dirs:
            try:
                os.makedirs(self.tmp_dir, exist_ok=True)
            except OSError as exc:
                raise space_error(exc, "creating the CAS temp directory") from None
            self._made_dirs.add(self.tmp_dir)
        return temp_path(self.tmp_dir)

    def _open_temp(self) -> tuple[str, IO[bytes]]:
        """A new, empty temp file for one object: one made ahead if there is one."""
        with self._deferred_lock:
            self._temps_used += 1
            if self._spare_temps:
                return self._spare_temps.pop()
        path = self._new_temp_path()
        return path, open(path, "x+b", buffering=0)

    def _recycle_temp(self, path: str, handle: IO[bytes], empty: bool = False) -> bool:
        """Keep an unpublished temp file, emptied, for the next object (a group commit's spares).

        A batch's empty captures would otherwise cost a create and an unlink each per run. Only
        for a file no other process can still write (a capture a stray may hold is detached).
        Its offset is left where it is: every user of a spare writes at explicit offsets or
        seeks first. empty: nothing was ever written to it.
        """
        with self._deferred_lock:
            if self._deferred is None or len(self._spare_temps) >= MAX_SPARE_TEMPS:
                return False
            if not empty:
                try:
                    os.ftruncate(handle.fileno(), 0)
                except OSError:
                    return False
            self._spare_temps.append((path, handle))
            self._temps_used -= 1
            return True

    def _discard_temp(self, path: str) -> None:
        """Remove a temp file now, or leave it to the group commit's flusher."""
        with self._deferred_lock:
            if self._deferred is not None:
                self._discarded.append(path)
                return
        _unlink_quietly(path)

    def housekeep(self, spare: int = 32) -> None:
        """For a group commit's flusher: remove discarded temp files, and make temp files
        ahead, up to `spare`: twice as many as the writers used up since the last call, and a
        few at least. A batch whose captures all come back empty keeps a few (close() removes
        them: 32 cost it ~1.5 ms); one that stores outputs, as many as it uses."""
        with self._deferred_lock:
            discarded, self._discarded = self._discarded, []
            used, self._temps_used = self._temps_used, 0
            wanted = min(spare, max(_SPARES_AT_LEAST, 2 * used)) - len(self._spare_temps)
        for path in discarded:
            _unlink_quietly(path)
        made = []
        try:
            for _ in range(wanted):
                path = self._new_temp_path()
                made.append((path, open(path, "x+b", buffering=0)))
        except (OSError, RequiemError):
            pass  # a full disk: the next writer makes its own temp file and reports the error
        with self._deferred_lock:
            self._spare_temps.extend(made)

    def close(self) -> None:
        """Remove the temp files made ahead or left behind for a group commit; end its helper."""
        self.housekeep(spare=0)
        with self._deferred_lock:
            spares, self._spare_temps = self._spare_temps, []
            self._unwritten, self._unwritten_bytes = {}, 0  # a failed flush's: no record names them
            writer, self._object_writer = self._object_writer, None
            unsynced, self._deferred = self._deferred or [], None  # a later put syncs its own
            if self._syncfs_fd is not None:
                os.close(self._syncfs_fd)
                self._syncfs_fd = None  # objects published after this are fsynced one by one
        for path, handle in spares:
            handle.close()
            _unlink_quietly(path)
        for fd in unsynced:  # left by a failed flush, whose records were not written
            os.close(fd)
        if writer is not None:
            writer.close()

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
            alive = pid_text.isdigit() and pid_alive(int(pid_text))
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

    def defer_syncs(self, writer_process: bool = False) -> None:
        """Publish new objects without waiting for fsync; sync_deferred() makes them durable
        and writes the small objects left to it (writer_process: through a helper process,
        where one can be forked; see requiem.object_writer).

        For a group commit: it calls sync_deferred() before writing the records that name the
        objects, so no record ever points at an object a power cut could lose. An object lost
        that way is left empty or short, which every put takes for absent and rewrites.
        """
        with self._deferred_lock:
            if self._deferred is None:
                self._deferred = []
                self._syncfs_fd = cas_sync.syncfs_descriptor(self.objects_dir, self.tmp_dir)
            if writer_process and self._object_writer is None:
                from requiem.object_writer import ObjectWriter

                self._object_writer = ObjectWriter.start(self.tmp_dir,
                                                         fsync_each=self._syncfs_fd is None)

    def sync_deferred(self) -> None:
        """Make every object published unsynced so far durable (from any thread).

        One syncfs(2) for the lot where it works: per-object fsyncs cost a journal commit each,
        and each hands the GIL back and forth with the runs. It also makes the new names in
        fan-out directories durable, which an fsync of the file alone does not.
        """
        self._write_pending()
        with self._deferred_lock:
            if self._deferred is None:
                return
            fds, self._deferred = self._deferred, []
            unsynced, self._unsynced = self._unsynced, 0
        try:
            if unsynced and self._syncfs_fd is not None:
                cas_sync.syncfs(self._syncfs_fd)
            for fd in fds:
                os.fsync(fd)
        except OSError as exc:
            raise space_error(exc, "syncing CAS objects") from None
        finally:
            for fd in fds:
                os.close(fd)

    def _sync_object(self, fd: int) -> None:
        """Make a new object's bytes durable now, or leave it to the group commit."""
        if self._deferred is None:
            os.fsync(fd)
            return
        with self._deferred_lock:
            if self._syncfs_fd is not None:
                return  # counted once published: a syncfs before the rename would not cover it
            # Bounded: each deferred object holds a descriptor until the flusher syncs it, and a
            # slow disk must not run the process out of descriptors.
            if self._deferred is not None and len(self._deferred) < MAX_DEFERRED:
                self._deferred.append(os.dup(fd))
                return
        os.fsync(fd)

    def writer(self, encoding: str = "identity", level: int = DEFAULT_ZSTD_LEVEL) -> CasWriter:
        """Start writing one object incrementally (bounded memory)."""
        return CasWriter(self, encoding, level)

    def put_bytes(self, data: bytes, encoding: str = "identity",
                  level: int = DEFAULT_ZSTD_LEVEL, digest: str | None = None,
                  fresh: bool = False) -> ObjectInfo:
        """Store a buffer; an object already present is returned as is.

        digest: the caller's own BLAKE3 of these very bytes, hashed moments ago. fresh: the
        caller knows these bytes are new (a run's result, with its own timestamps), so no
        lookup is made; if they were stored after all, the same bytes are written again.
        """
        if digest is None:
            digest = hashing.hash_bytes(data)
        if self._unwritten and digest in self._unwritten:
            waiting = self._known.get(digest)
            if waiting is not None:
                return waiting  # the flusher writes these very bytes before any record names them
        final = self._object_file(digest)
        existing = None if fresh else self._existing(digest, final)
        if existing is not None:
            return existing
        if encoding != "identity":
            with self.writer(encoding, level) as w:
                w.write(data)
                return w.commit()
        # Identity objects skip the streaming writer: a small one is left to a group commit's
        # flusher if there is one, else it is one write and one rename, into a temp file a group
        # commit made ahead.
        info = ObjectInfo(digest, "identity", len(data), len(data), digest, utc_now_iso())
        header = encode_header(info)
        if len(data) >= CHUNK_SIZE or not self._leave_to_flusher(digest, header + data, final):
            try:
                temp, handle = self._open_temp()
                self._write_object((header, data), final, temp, handle)
            except OSError as exc:
                raise space_error(exc, "writing a CAS object") from None
        self._remember(info)
        return info

    def put_file(self, path: str | os.PathLike[str], encoding: str = "identity",
                 level: int = DEFAULT_ZSTD_LEVEL) -> ObjectInfo:
        """Store a regular file by streaming it (never whole in memory)."""
        source_path = os.fspath(path)
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

    def _existing(self, digest: str, path: str) -> ObjectInfo | None:
        """The object already stored under digest, if it is there and well formed."""
        known = self._known.get(digest)
        if known is not None:
            try:
                if os.stat(path).st_size == HEADER_SIZE + known.stored_size:
                    return known
            except OSError:
                pass
            self._known.pop(digest, None)  # another --jobs thread may have dropped it already
        found = self._read_header_quietly(path, digest, sync=True)
        if found is not None:
            self._remember(found)
        return found

    def _remember(self, info: ObjectInfo) -> None:
        if len(self._known) >= 65536:
            self._known.clear()  # a bound, not a cache policy: the next put re-reads a header
        self._known[info.digest] = info

    def _read_header_quietly(self, path: str, digest: str,
                             sync: bool = False) -> ObjectInfo | None:
        """The header of an existing, well-formed object, or None (absent or malformed).

        sync: fsync it too, before the caller names it in a durable record. Another process's
        group commit may have published it unsynced; an fsync of a clean file costs little.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # no io layer: most puts find nothing
        except OSError:
            return None
        try:
            info = decode_header(os.pread(fd, HEADER_SIZE, 0), digest, os.fstat(fd).st_size)
            if sync:
                os.fsync(fd)
            return info
        except (OSError, ValueError, TypeError):
            return None
        finally:
            os.close(fd)

    def contains(self, digest: str) -> bool:
        """True when an object with this digest is present (content not checked)."""
        return self.object_path(digest).is_file()

    def info(self, digest: str) -> ObjectInfo:
        """The metadata of an object; missing_input if absent, cas_integrity_failed if malformed."""
        try:
            with open(self.object_path(digest), "rb") as handle:
                return self._header(handle, digest)
        except FileNotFoundError:
            raise RequiemError(MISSING_INPUT, f"no object {digest} in the CAS", digest=digest) from None

    def _header(self, handle: IO[bytes], digest: str) -> ObjectInfo:
        raw = handle.read(HEADER_SIZE)
        try:
            return decode_header(raw, digest, os.fstat(handle.fileno()).st_size)
        except (ValueError, TypeError) as exc:
            raise RequiemError(
                CAS_INTEGRITY_FAILED, f"object {digest}: bad metadata: {exc}", digest=digest
            ) from None

    def _open_checked(self, digest: str) -> tuple[IO[bytes], ObjectInfo]:
        """The object opened once: header checked, stored blob hashed, positioned at the blob."""
        try:
            # Unbuffered: the file offset must be where seek() says, for the kernel copy.
            handle = open(self.object_path(digest), "rb", buffering=0)
        except FileNotFoundError:
            raise RequiemError(MISSING_INPUT, f"no object {digest} in the CAS", digest=digest) from None
        try:
            info = self._header(handle, digest)
            stored_hash = hashing.hash_open_file(handle, HEADER_SIZE)
            if stored_hash != info.stored_blob_hash:
                raise RequiemError(CAS_INTEGRITY_FAILED,
                                   f"object {digest}: stored blob hash mismatch", digest=digest)
        except BaseException:
            handle.close()
            raise
        handle.seek(HEADER_SIZE)
        return handle, info

    def iter_content(self, digest: str) -> Iterator[bytes]:
        """Yield an object's content in chunks; raises cas_integrity_failed if it reads wrong."""
        handle, info = self._open_checked(digest)
        with handle:
            yield from self._content(handle, info)

    def _content(self, handle: IO[bytes], info: ObjectInfo) -> Iterator[bytes]:
        """The content of a checked, open object, decompressed and re-checked when zstd."""
        if info.encoding == "identity":
            # The stored hash is the content digest here: already checked in full.
            while chunk := handle.read(CHUNK_SIZE):
                yield chunk
            return
        import zstandard

        digest = info.digest
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
        target = os.fspath(out)
        if os.path.isdir(target):
            raise RequiemError(INVALID_REQUEST, f"--out is a directory: {target}")
        folder, name = os.path.split(target)
        temp = os.path.join(folder, f".{name}.{os.urandom(6).hex()}.part")
        handle, info = self._open_checked(digest)
        try:
            with handle, open(temp, "xb") as sink:
                if info.encoding == "identity":
                    kernel_copy(os.dup(handle.fileno()), sink.fileno())
                else:
                    for chunk in self._content(handle, info):
                        sink.write(chunk)
            os.rename(temp, target)
        except OSError as exc:
            _unlink_quietly(temp)
            raise space_error(exc, f"writing {target}") from None
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
            # For identity objects opening checks everything (the stored hash is the digest).
            handle, info = self._open_checked(digest)
            with handle:
                if info.encoding == "zstd":
                    for _ in self._content(handle, info):
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


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
