"""The batch figures' anchor: a bare Python loop spawning /bin/true through a sandbox backend.

Run as a program, it is what a user would write instead of `requiem exec batch`, and is timed
the same way, its interpreter's start and imports included:

    python benchmarks/bare_loop.py BACKEND WORKSPACE COUNT [THREADS [PROBE_CACHE_DIR]]

exec_bench.py also calls `seconds_per_spawn` in its own process, where no start is counted.
"""

from __future__ import annotations

import os
import sys
import time

# A lean program (no pathlib): its start is part of the anchor, so it is kept to what a
# careful hand-written loop would import.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from requiem.sandbox import LaunchSpec, select_backend  # noqa: E402


def seconds_per_spawn(backend: str, workspace: str, count: int, threads: int = 1,
                      cache_dir: str | None = None) -> float:
    """Seconds per spawn + wait of /bin/true through the backend, from `threads` threads
    (cache_dir: where the backend's capability probe is cached)."""
    impl = select_backend(backend, cache_dir)

    def spawn_one(_: int) -> None:
        with open(os.devnull, "wb") as sink:
            spec = LaunchSpec(executable="/bin/true", argv=["/bin/true"], env={},
                              cwd=workspace, workspace=workspace,
                              stdout_fd=sink.fileno(), stderr_fd=sink.fileno())
            child = impl.spawn(spec)
            child.wait(None)
            child.kill_tree()

    start = time.perf_counter()
    if threads == 1:
        for n in range(count):
            spawn_one(n)
    else:  # threads taking turns from one counter (concurrent.futures would cost ~10 ms)
        import threading

        numbers = iter(range(count))
        taking = threading.Lock()

        def worker() -> None:
            while True:
                with taking:
                    n = next(numbers, None)
                if n is None:
                    return
                spawn_one(n)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
    elapsed = time.perf_counter() - start
    impl.close()
    return elapsed / max(count, 1)


if __name__ == "__main__":
    backend, workspace, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seconds_per_spawn(backend, workspace, count, int(sys.argv[4]) if len(sys.argv) > 4 else 1,
                      sys.argv[5] if len(sys.argv) > 5 else None)
