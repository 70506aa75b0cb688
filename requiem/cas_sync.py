"""Making a group of CAS objects durable at once: syncfs(2), where it can be trusted."""

from __future__ import annotations

import errno
import os

# Filesystems whose syncfs(2) writes back every dirty page and inode and reports writeback
# errors (kernel 5.8+); elsewhere (FUSE, network filesystems) it may return 0 having done
# nothing, so objects are fsynced one by one.
SYNCFS_FILESYSTEMS = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs", "tmpfs"})


def syncfs_descriptor(objects_dir: str, tmp_dir: str) -> int | None:
    """A descriptor of the objects' directory for syncfs(2), if one call makes them durable;
    else None."""
    try:
        release = tuple(int(part) for part in os.uname().release.split(".")[:2])
    except ValueError:
        return None
    if release < (5, 8):
        return None  # syncfs reports no writeback error before 5.8
    try:
        os.makedirs(objects_dir, exist_ok=True)
        os.makedirs(tmp_dir, exist_ok=True)
        fd = os.open(objects_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        device = os.fstat(fd).st_dev
        # Objects are renamed in from the temp directory: both must be on the synced filesystem.
        if os.stat(tmp_dir).st_dev == device and filesystem_type(device) in SYNCFS_FILESYSTEMS:
            from requiem import libc

            libc.function("syncfs")  # present in this libc
            return fd
    except (OSError, AttributeError):
        pass
    os.close(fd)
    return None


def filesystem_type(device: int) -> str | None:
    """The type of the filesystem mounted as `device`, from /proc/self/mountinfo."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == wanted and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:
        pass
    return None


def syncfs(fd: int) -> None:
    """syncfs(2): write back every dirty page and inode of fd's filesystem, and wait."""
    from requiem import libc

    if libc.call("syncfs", fd) != 0:
        raise OSError(errno.EIO, "syncfs of the CAS filesystem failed")
