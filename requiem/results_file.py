"""A batch's results file: one JSON line per request, in input order, written as runs settle."""

from __future__ import annotations

import errno
import os

from requiem.cas_writer import write_all
from requiem.errors import QUOTA_EXCEEDED, RequiemError
from requiem.result_pack import named_in_line

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every start
if TYPE_CHECKING:
    from typing import Any, Callable

    # A result document's digest -> (whether its pack is decided yet, the pack or None).
    PackLookup = Callable[[str], tuple[bool, str | None]]

# Settled lines are written in chunks about this size: one write every hundred runs or so.
_CHUNK_BYTES = 256 << 10


class ResultsFile:
    """Result lines written to a temp file in `out_path`'s directory as they settle, put in
    place by finish() (so a batch's results appear whole or not at all) or dropped by discard().

    A line waits only until the group commit has named the pack holding its result document:
    a batch holds a few groups' lines, not every line of its run (~2.6 KB each).
    """

    def __init__(self, out_path: str) -> None:
        self.out_path = out_path
        self._name = os.path.basename(out_path)
        self._temp_name = f"{self._name}.{os.getpid()}.part"
        # Opened before any request runs: a batch with nowhere to put its results runs nothing.
        # Unnamed where the filesystem can (O_TMPFILE), so a batch killed outright leaves no
        # file behind; named beside the results file elsewhere.
        self._unnamed = True
        self._fd: int | None = None
        try:
            self._dir: int | None = os.open(os.path.dirname(out_path) or ".",
                                            os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise self._error(exc) from None
        try:
            try:
                self._fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666,
                                   dir_fd=self._dir)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                self._unnamed = False
                self._fd = os.open(self._temp_name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                   | os.O_CLOEXEC, 0o666, dir_fd=self._dir)
        except OSError as exc:
            self.discard()
            raise self._error(exc) from None
        self._waiting: list[tuple[bool, bytes, str | None]] = []
        self._chunk: list[bytes] = []
        self._chunk_bytes = 0
        self.requests = 0
        self.failed = 0

    def add(self, succeeded: bool, line: bytes, document: str | None = None) -> None:
        """Queue one request's result line; `document`: the digest of its result document,
        whose pack the line is to name once the group commit has stored it."""
        self._waiting.append((succeeded, line, document))

    @property
    def waiting(self) -> int:
        """How many queued lines are not written yet."""
        return len(self._waiting)

    def write_settled(self, pack_of: PackLookup | None = None) -> None:
        """Write the queued lines up to the first whose pack is not decided yet."""
        settled = 0
        for succeeded, line, document in self._waiting:
            if document and pack_of is not None:
                decided, pack = pack_of(document)
                if not decided:
                    break
                line = named_in_line(line, document, pack)
            self._chunk.append(line)
            self._chunk_bytes += len(line)
            self.requests += 1
            self.failed += not succeeded
            settled += 1
        del self._waiting[:settled]
        if self._chunk_bytes >= _CHUNK_BYTES:
            self._write_chunk()

    def finish(self) -> dict[str, Any]:
        """Write what is left, put the file in place and return the batch's summary."""
        assert self._fd is not None and self._dir is not None, "finish() after discard()"
        if self._waiting:
            raise RuntimeError(f"{len(self._waiting)} results were never settled")
        self._write_chunk()
        try:
            if self._unnamed:  # a name first: linkat cannot replace a file already there
                # With a directory descriptor, os.link is linkat(..., AT_SYMLINK_FOLLOW).
                os.link(f"/proc/self/fd/{self._fd}", self._temp_name, dst_dir_fd=self._dir)
                self._unnamed = False
            os.replace(self._temp_name, self._name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        except OSError as exc:
            self.discard()
            raise self._error(exc) from None
        self._close()
        return {"ok": self.failed == 0, "requests": self.requests,
                "succeeded": self.requests - self.failed, "failed": self.failed,
                "out": os.path.abspath(self.out_path)}

    def discard(self) -> None:
        """Remove the temp file (a batch that failed or was interrupted hands out no results)."""
        if not self._unnamed and self._dir is not None:
            try:
                os.unlink(self._temp_name, dir_fd=self._dir)
            except FileNotFoundError:
                pass
        self._close()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        directory, self._dir = self._dir, None
        try:
            if fd is not None:
                os.close(fd)
        finally:
            if directory is not None:
                os.close(directory)

    def _write_chunk(self) -> None:
        if not self._chunk:
            return
        assert self._fd is not None
        try:
            write_all(self._fd, b"".join(self._chunk))
        except OSError as exc:
            raise self._error(exc) from None
        self._chunk.clear()
        self._chunk_bytes = 0

    def _error(self, exc: OSError) -> RequiemError:
        return RequiemError(QUOTA_EXCEEDED, f"cannot write {self.out_path}: {exc.strerror}")
