"""Leases: objects a run in progress uses before any record names them, spared by the GC.

A run's inputs may be objects nothing references yet (put with `cas put`, never pinned). From
the moment the run copies them out until its record lands, a GC must not delete them, or the
record would name an object the store no longer has. A lease is a file under `<cas>/leases/`
listing those digests, named after the process that holds it; the GC reads every lease of a
live process inside its exclusive hold and spares what they list.
"""

from __future__ import annotations

import os

from requiem.cas import pid_alive
from requiem.cas_guard import write_guard

TYPE_CHECKING = False  # typing is for checkers only: importing it costs every cold start
if TYPE_CHECKING:
    from typing import Iterable

LEASES_DIR = "leases"


class lease:  # noqa: N801 - used as a function: `with lease(root, digests):`
    """Hold while using objects no record names yet; a GC spares every digest listed.

    The lease is written under the write guard, so a GC either finished deleting before it
    (the caller then finds the object missing and says so) or reads it in its exclusive hold.
    """

    def __init__(self, cas_root: str | os.PathLike[str], digests: Iterable[str]) -> None:
        self._root = cas_root
        self._wanted = sorted(set(digests))
        self._path: str | None = None
        self._owner = 0

    def __enter__(self) -> None:
        if not self._wanted:
            return
        directory = os.path.join(self._root, LEASES_DIR)
        path = os.path.join(directory, f"{os.getpid()}.{os.urandom(8).hex()}")
        with write_guard(self._root):
            os.makedirs(directory, exist_ok=True)
            with open(path, "w", encoding="ascii") as handle:
                handle.write("\n".join(self._wanted) + "\n")
        self._path, self._owner = path, os.getpid()

    def __exit__(self, *exc_info: object) -> None:
        # A child forked inside the lease leaves it without ending it: the file is its parent's.
        if self._path is not None and os.getpid() == self._owner:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
        self._path = None


def leased_digests(cas_root: str | os.PathLike[str]) -> set[str]:
    """Every digest leased by a live process; the leases of dead processes are removed."""
    directory = os.path.join(cas_root, LEASES_DIR)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set()
    leased: set[str] = set()
    for name in names:
        path = os.path.join(directory, name)
        pid = name.split(".", 1)[0]
        if not (pid.isdigit() and pid_alive(int(pid))):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                leased.update(line for line in handle.read().split() if len(line) == 64)
        except FileNotFoundError:
            continue  # its run ended while we listed
    return leased

