"""The filesystem a sandboxed command sees, as mount operations both backends apply in order; stdlib only."""

from __future__ import annotations

import os

# Only these system trees are shown: binding `/` whole would expose every pathname unix socket on the host
# (docker.sock, dbus, ...) to a network-isolated command, and /root and /home besides.
SYSTEM_DIRS = ("/usr", "/etc")
ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/run")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def layout(workspace: str, readonly_paths: tuple[str, ...] = ()) -> list[list[str]]:
    """Mount operations: ro system dirs, root symlinks as on the host, fresh proc/dev, private scratch, rw workspace."""
    ops = [["ro", d, d] for d in SYSTEM_DIRS if os.path.isdir(d)]
    for link in ROOT_LINKS:
        if os.path.islink(link):
            ops.append(["symlink", os.readlink(link), link])
        elif os.path.isdir(link):
            ops.append(["ro", link, link])
    ops += [["proc", "/proc"], ["dev", "/dev"]] + [["tmpfs", d] for d in SCRATCH_DIRS]
    # Real paths: a source is later opened below another root, where absolute symlinks would mislead.
    for path in readonly_paths:
        real = os.path.realpath(path)
        ops.append(["ro", real, real])
    real_ws = os.path.realpath(workspace)
    ops.append(["rw", real_ws, real_ws])
    ops.append(["remount_ro", "/"])
    return ops


def visible(path: str, ops: list[list[str]]) -> bool:
    """Whether a host path is reachable inside the layout (so exec of it can work)."""
    real = os.path.realpath(path)
    for op in ops:
        if op[0] in ("ro", "rw") and (real == op[2] or real.startswith(op[2].rstrip("/") + "/")):
            return True
    return False
