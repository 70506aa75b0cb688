"""Escape attempts run inside a sandbox by the system python3: `attack.py ACTION [ARGS...]`."""

# Prints {attempt: "ALLOWED" | errno name}: what the kernel said. The tests decide what must have failed,
# and check the host side too.

import ctypes
import errno
import json
import os
import socket
import sys
import time

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
RESULTS = {}


def attempt(name, fn):
    try:
        fn()
        RESULTS[name] = "ALLOWED"
    except OSError as exc:
        RESULTS[name] = errno.errorcode.get(exc.errno, str(exc.errno))
    except MemoryError:
        RESULTS[name] = "MemoryError"


def checked(ret):
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def write(path, mode="w"):
    with open(path, mode) as handle:
        handle.write("escape")


def fs(ws, outside, home, system="1"):
    """Writes everywhere but the workspace; `outside` holds existing.txt and is bound read-only when visible.

    system="0" leaves /etc, /usr, /tmp and home alone: for runs where the escape is expected to work.
    """
    existing = os.path.join(outside, "existing.txt")
    attempt("create_outside", lambda: write(os.path.join(outside, "new.txt")))
    attempt("create_beside_workspace", lambda: write(os.path.join(ws, "..", "beside.txt")))
    attempt("append_outside", lambda: write(existing, "a"))
    attempt("truncate_outside", lambda: os.truncate(existing, 0))
    attempt("unlink_outside", lambda: os.unlink(existing))
    write(os.path.join(ws, "moveme"))
    attempt("rename_out_of_workspace", lambda: os.rename(os.path.join(ws, "moveme"), os.path.join(outside, "moved")))
    attempt("symlink_outside", lambda: os.symlink("/etc/passwd", os.path.join(outside, "link")))
    attempt("hardlink_outside", lambda: os.link(os.path.join(ws, "moveme"), os.path.join(outside, "hard")))
    attempt("write_workspace", lambda: write(os.path.join(ws, "inside.txt")))
    if system == "1":
        attempt("write_etc", lambda: write("/etc/requiem-escape"))
        attempt("write_usr", lambda: write("/usr/requiem-escape"))
        attempt("write_home", lambda: write(os.path.join(home, "requiem-escape")))
        attempt("write_tmp", lambda: write("/tmp/requiem-private"))


def remount(outside):
    """As (namespace) root: make / and /usr writable again, then write through them."""
    ms_remount, ms_bind = 32, 4096
    attempt("remount_root_rw", lambda: checked(LIBC.mount(None, b"/", None, ms_remount | ms_bind, None)))
    attempt("remount_usr_rw", lambda: checked(LIBC.mount(None, b"/usr", None, ms_remount | ms_bind, None)))
    attempt("remount_outside_rw", lambda: checked(LIBC.mount(None, outside.encode(), None, ms_remount | ms_bind,
                                                             None)))
    attempt("umount_outside", lambda: checked(LIBC.umount2(outside.encode(), 2)))
    attempt("write_usr_after", lambda: write("/usr/requiem-escape"))
    attempt("write_outside_after", lambda: write(os.path.join(outside, "after-remount.txt")))


def net(tcp_port, udp_port, abstract, pathname):
    def tcp():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(2)
        sock.connect(("127.0.0.1", int(tcp_port)))
        sock.sendall(b"escape")

    def udp():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(3):
            sock.sendto(b"escape", ("127.0.0.1", int(udp_port)))

    def unix(address):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        sock.connect(address)
        sock.sendall(b"escape")

    attempt("tcp_loopback", tcp)
    attempt("udp_loopback", udp)
    attempt("abstract_unix", lambda: unix("\0" + abstract))
    attempt("pathname_unix", lambda: unix(pathname))
    attempt("interfaces", lambda: RESULTS.update(if_names=sorted(n for _, n in socket.if_nameindex())))


def status():
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("NoNewPrivs", "Seccomp", "CapEff", "CapBnd", "CapPrm", "Uid"):
                RESULTS[key] = value.split()[0] if key == "Uid" else value.strip()


def seccomp():
    ptrace, io_uring_setup = 101, 425
    params = ctypes.create_string_buffer(120)
    attempt("ptrace_traceme", lambda: checked(LIBC.ptrace(0, 0, None, None)))
    attempt("io_uring_setup", lambda: checked(LIBC.syscall(io_uring_setup, 8, params)))
    attempt("unshare_user", lambda: checked(LIBC.unshare(0x10000000)))
    attempt("raw_ptrace", lambda: checked(LIBC.syscall(ptrace, 0x4206, os.getpid(), 0, 0)))


def int80():
    """i386 getpid through int 0x80 from an RWX page: the arch check must kill us (SIGSYS)."""
    import mmap

    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20; int 0x80; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    func = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    print(json.dumps({"int80_pid": func(), "pid": os.getpid()}), flush=True)


def mdwe():
    import mmap

    attempt("rwx_mmap", lambda: mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC))


def supervisor(pid):
    pid = int(pid)
    attempt("kill_0", lambda: os.kill(pid, 0))
    attempt("kill_usr1", lambda: os.kill(pid, 10))
    attempt("ptrace_attach", lambda: checked(LIBC.ptrace(16, pid, None, None)))
    attempt("read_environ", lambda: open(f"/proc/{pid}/environ", "rb").read())


def escapee(marker, then):
    """Leave a setsid, double-forked grandchild behind (`sleep marker`), then `then`: exit or hang."""
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv("/bin/sleep", ["sleep", marker])
        os._exit(0)
    os.wait()
    RESULTS["escapee"] = "started"
    if then == "hang":
        print(json.dumps(RESULTS), flush=True)
        time.sleep(600)


def limits(kind):
    if kind == "cpu":
        while True:
            pass
    if kind == "as":
        attempt("allocate_512MiB", lambda: bytearray(512 << 20))
    if kind == "fsize":
        attempt("write_2MiB", lambda: write_big("big.bin", 2 << 20))
    if kind == "nofile":
        attempt("open_100", lambda: [open("/dev/null") for _ in range(100)])
    if kind == "core":
        import resource

        RESULTS["core"] = resource.getrlimit(resource.RLIMIT_CORE)
    if kind == "nproc":
        children = []

        def bomb():
            for _ in range(60):
                pid = os.fork()
                if pid == 0:
                    time.sleep(3)
                    os._exit(0)
                children.append(pid)

        attempt("fork_60", bomb)
        RESULTS["forked"] = len(children)


def write_big(path, size):
    with open(path, "wb") as handle:
        handle.write(b"x" * size)


if __name__ == "__main__":
    action, args = sys.argv[1], sys.argv[2:]
    globals()[action](*args)
    print(json.dumps(RESULTS), flush=True)
