"""Group commit: the history records of a batch made durable together, beside the runs."""

from __future__ import annotations

import os
import threading
import time

from requiem import result_pack, spool
from requiem.cas import Cas
from requiem.cas_guard import hold_shared

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

# Runs wait for the flusher beyond this many records, so memory stays bounded.
MAX_PENDING = 1024
# How long the flusher waits for a fuller group, and the group size that ends the wait early.
LINGER_SECONDS = 0.02
GROUP_TARGET = 64
# Temp files made ahead before the first group (later ones as many as the runs use up: see
# Cas.housekeep): a batch of one request would otherwise create and remove dozens it never uses.
FIRST_SPARES = 4


class PackName:
    """Where the flush names the pack holding one run's result document, for its results line
    (a slot, not the record: a --jobs N worker holds one a run until its last flush)."""

    __slots__ = ("digest",)

    def __init__(self) -> None:
        self.digest: str | None = None  # set by the flusher thread


class GroupCommit:
    """Spool records handed over by runs and written by a flusher thread, many per fsync.

    One run costs three fsyncs when it commits alone (its result object, its spool record and
    the spool directory). Here the store publishes objects unsynced, and a flusher thread makes
    them durable (one syncfs per group where it can be trusted, else an fsync each) and then
    appends every waiting record with one fdatasync, while the next run goes on. Small objects
    (a run's new request object, the group's pack of result documents if under 1 MiB) are
    written at the flush too, by a helper process: creating a file can cost as much as a whole
    /bin/true spawn on this ext4 (see Cas._unwritten). The flusher
    lingers up to LINGER_SECONDS for a group of GROUP_TARGET records: a group per run would
    cost an fdatasync and a GIL handover each. A batch hands out results only after the last
    flush, so every result it returns has a durable record (a batch terminated midway flushes
    what it queued; one killed with SIGKILL loses the queued records of runs whose results it
    never returned). From a run's first record until the flush that writes it, a shared hold
    of the GC guard keeps a collector away from the objects the record names.

    A run's result document is not stored as an object of its own: the flush stores the
    group's documents as one pack (requiem.result_pack) and names it in their records. One
    object per run would cost a file, an inode and a 4 KiB block each, and in a young store a
    new fan-out directory too. Measured A/B where file creation was slow, a batch of /bin/true
    took ~850 us a run against ~1150; on a quiet disk the two were within noise.
    """

    def __init__(self, cas: Cas, spool_dir: str | os.PathLike[str]) -> None:
        self._cas = cas
        self._spool_dir = spool_dir
        # (kind, payload, the run's result document to pack or None, the record encoded: its
        # spool line, or one whose result_pack the flush fills in, and where the pack is named)
        self._pending: list[tuple[str, dict[str, Any], bytes | None, bytes | spool.Unfilled,
                                  PackName | None]] = []
        self._changed = threading.Condition()
        self._guard: int | None = None
        self._closing = False
        self._error: BaseException | None = None
        cas.defer_syncs(writer_process=True)  # before the flusher thread: a fork needs one thread
        self._flusher = threading.Thread(target=self._flush_loop, name="requiem-group-commit",
                                         daemon=True)
        self._flusher.start()

    @staticmethod
    def packable(document: bytes) -> bool:
        """Whether a result document goes into the group's pack (else it is an object alone)."""
        return len(document) <= result_pack.MAX_PACKED_DOCUMENT

    def add(self, kind: str, payload: dict[str, Any],
            document: bytes | None = None) -> PackName | None:
        """Queue one record; called while the caller holds the write guard. `document` (a
        run's result as compact JSON) goes into the group's pack, which the flush names in the
        record's `result_pack` and in the PackName returned (None without a document).

        The record is encoded here, in the caller's thread: a batch calls this while its next
        command runs, and the flusher thread would hold the GIL against the runs doing it.
        """
        if document is None:
            encoded: bytes | spool.Unfilled = spool.encode(kind, payload)[1]
        else:
            encoded = spool.Unfilled(kind, payload, "result_pack")
        with self._changed:
            while len(self._pending) >= MAX_PENDING and self._error is None:
                self._changed.wait()
            if self._error is not None:
                raise self._error
            if self._guard is None:
                self._guard = hold_shared(self._cas.root)
            named = None if document is None else PackName()
            self._pending.append((kind, payload, document, encoded, named))
            if len(self._pending) in (1, GROUP_TARGET):  # a flusher waits for the first, or lingers
                self._changed.notify_all()
        return named

    def close(self) -> None:
        """Flush what is queued and stop; a failed flush's error is raised here."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._flusher.join()
        try:
            self._cas.sync_deferred()
        finally:
            self._cas.close()  # its temp files and descriptors go, on a failed sync too
        if self._error is not None:
            raise self._error
        if self._pending:  # never, unless the flusher ended without saying why
            raise RuntimeError(f"{len(self._pending)} history records were not written")

    def _flush_loop(self) -> None:
        try:
            self._flush_until_closed()
        except BaseException as exc:  # the runs waiting to queue, and close(), raise it
            self._fail(exc)

    def _flush_until_closed(self) -> None:
        self._cas.housekeep(spare=FIRST_SPARES)
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                # Linger: a fuller group costs fewer fsyncs and fewer wakeups competing for the GIL.
                deadline = time.monotonic() + LINGER_SECONDS
                while (len(self._pending) < GROUP_TARGET and not self._closing
                       and (left := deadline - time.monotonic()) > 0):
                    self._changed.wait(left)
                if not self._pending:
                    return
                records, self._pending = self._pending, []
                self._changed.notify_all()
            self._pack_documents(records)
            self._cas.sync_deferred()  # the objects first: a durable record never dangles
            spool.append_lines(self._spool_dir, [
                (kind, encoded.filled(payload["result_pack"])
                 if isinstance(encoded, spool.Unfilled) else encoded)
                for kind, payload, _, encoded, _ in records])
            with self._changed:
                if not self._pending:
                    self._release_guard()
            self._cas.housekeep()

    def _pack_documents(self, records: list[tuple[str, dict[str, Any], bytes | None, Any,
                                                  PackName | None]]) -> None:
        """Store the group's result documents as packs and name each one in its records."""
        packed = [(payload, document, named) for _, payload, document, _, named in records
                  if document is not None]
        done = 0
        for documents in result_pack.split([document for _, document, _ in packed]):
            pack = self._cas.put_bytes(result_pack.pack(documents), fresh=True).digest
            for payload, _, named in packed[done:done + len(documents)]:
                payload["result_pack"] = pack
                if named is not None:
                    named.digest = pack
            done += len(documents)

    def _fail(self, exc: BaseException) -> None:
        """Stop flushing: the runs waiting to queue, and close(), raise exc."""
        with self._changed:
            self._error = exc
            try:
                self._release_guard()
            finally:
                self._changed.notify_all()

    def _release_guard(self) -> None:
        guard, self._guard = self._guard, None  # first: a close that raises has closed it anyway
        if guard is not None:
            os.close(guard)
