"""Group commit: the history records of a batch made durable together, beside the runs."""

from __future__ import annotations

import _thread  # threading.Lock is _thread.allocate_lock: see requiem/__init__.py on imports
import os
import time

from requiem import result_pack, spool
from requiem.cas import Cas
from requiem.cas_guard import hold_shared
from requiem.sandbox.proc import wait_readable

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Any

# Runs wait for the flusher beyond this many records, so memory stays bounded (looking again
# this often, whichever of several waiting threads the flusher's word reached).
MAX_PENDING = 1024
_ROOM_RECHECK_SECONDS = 0.05
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
        # Guards the fields below it; held only for moments, never across a wait. Waits are on
        # eventfds (level-triggered: a write before the wait still wakes it), not threading's
        # Condition: `import threading` costs a batch's start ~5 ms (functools, collections),
        # and a poll is interrupted by a signal with nothing to restore.
        self._lock = _thread.allocate_lock()
        self._guard: int | None = None
        self._closing = False
        self._error: BaseException | None = None
        self._ended = False  # the flusher's last act, before it lets go of _running
        self._room_waiters = 0  # runs waiting in add() for the queue to have room
        self._pid = os.getpid()  # a child forked meanwhile has the state, not the thread
        cas.defer_syncs(writer_process=True)  # before the flusher thread: a fork needs one thread
        self._work = self._room = -1
        try:
            self._work = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)  # records, or closing
            self._room = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)  # records taken, or failed
            # Held while the flusher runs: close() waits for it by taking it.
            self._running = _thread.allocate_lock()
            self._running.acquire()
            _thread.start_new_thread(self._flush_loop, ())  # last: once it runs, nothing fails
        except BaseException:
            self._close_eventfds()
            raise

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
        named = None if document is None else PackName()
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                if self._closing:
                    raise RuntimeError("a history record queued after the group commit closed")
                if len(self._pending) < MAX_PENDING:
                    if self._guard is None:
                        self._guard = hold_shared(self._cas.root)
                    self._pending.append((kind, payload, document, encoded, named))
                    if len(self._pending) in (1, GROUP_TARGET):  # the flusher waits, or lingers
                        os.eventfd_write(self._work, 1)
                    return named
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """Wait a moment for the flusher to take records (a rare full queue: it is behind)."""
        waiting = False
        try:
            with self._lock:
                self._room_waiters += 1
                waiting = True
            _wait(self._room, _ROOM_RECHECK_SECONDS)
        finally:
            if waiting:  # whatever interrupted it, the count is put right
                with self._lock:
                    self._room_waiters -= 1
                    if self._ended and not self._room_waiters:
                        self._close_eventfds()

    def close(self) -> None:
        """Flush what is queued and stop; a failed flush's error is raised here.

        In a child forked meanwhile it only closes the child's copies of its descriptors: the
        records, the store's temp files and its helper are the parent's.
        """
        if os.getpid() != self._pid:
            self._closing = True  # a record the child adds is refused, not lost
            fds = (self._work, self._room, self._guard)
            self._work = self._room = -1
            self._guard = None
            for fd in fds:
                if fd is not None and fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            return
        with self._lock:
            if not self._closing:
                self._closing = True
                if self._work >= 0:  # else the flusher has ended, and a run closed them
                    os.eventfd_write(self._work, 1)
        # Until the flusher has ended. A signal interrupts the wait, and a close() after it waits
        # again; the flag, not the lock alone, says it ended (an interrupted close may hold it).
        while not self._ended:
            if self._running.acquire(timeout=0.05):
                self._running.release()
        with self._lock:
            if not self._room_waiters:
                self._close_eventfds()  # else the last run waiting for room closes them
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
        finally:
            with self._lock:
                self._ended = True
            self._running.release()

    def _flush_until_closed(self) -> None:
        self._cas.housekeep(spare=FIRST_SPARES)
        while True:
            while not self._pending and not self._closing:
                _wait(self._work, None)
            # Linger: a fuller group costs fewer fsyncs and fewer wakeups competing for the GIL.
            deadline = time.monotonic() + LINGER_SECONDS
            while (len(self._pending) < GROUP_TARGET and not self._closing
                   and (left := deadline - time.monotonic()) > 0):
                _wait(self._work, left)
            with self._lock:
                records, self._pending = self._pending, []
            if not records:
                return  # closing, and nothing left
            os.eventfd_write(self._room, 1)
            self._pack_documents(records)
            self._cas.sync_deferred()  # the objects first: a durable record never dangles
            spool.append_lines(self._spool_dir, [
                (kind, encoded.filled(payload["result_pack"])
                 if isinstance(encoded, spool.Unfilled) else encoded)
                for kind, payload, _, encoded, _ in records])
            with self._lock:
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
        with self._lock:
            self._error = exc
            os.eventfd_write(self._room, 1)
            self._release_guard()

    def _close_eventfds(self) -> None:
        """Close the eventfds once (under _lock, or before the flusher started)."""
        work, room, self._work, self._room = self._work, self._room, -1, -1
        try:
            if work >= 0:
                os.close(work)
        finally:
            if room >= 0:
                os.close(room)

    def _release_guard(self) -> None:
        guard, self._guard = self._guard, None  # first: a close that raises has closed it anyway
        if guard is not None:
            os.close(guard)


def _wait(eventfd: int, timeout_s: float | None) -> None:
    """Wait until the eventfd was written (since its last wait) or timeout_s passes; reset it."""
    if wait_readable(eventfd, timeout_s):
        try:
            os.eventfd_read(eventfd)
        except BlockingIOError:
            pass  # another waiter reset it first
