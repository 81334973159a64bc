"""The machine as this process sees it: the memory left to it, the CPUs it may use, how freed memory is kept.

glibc returns a freed block of more than its trim threshold to the kernel and maps a new block of
more than its mmap threshold with fresh pages, so a loop that allocates and frees the same large
tensors page-faults them in again and again: measured, the 30-seed evaluation spent more time in
the kernel than computing (docs/design.md, "Evaluation"). ``retain_freed_memory`` keeps freed
memory in the heap for reuse. jemalloc or tcmalloc do the same but must be preloaded before the
interpreter starts; glibc's own knobs can be set from inside the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's largest mmap threshold on 64-bit systems
TRIM_THRESHOLD = 1 << 30  # freed memory kept for reuse before glibc gives it back


def retain_freed_memory() -> bool:
    """Blocks up to 32 MiB come from the heap and freed memory stays there (glibc only; else a no-op).

    Process-wide and idempotent; RSS then stays at the run's peak, which the memory model counts
    (docs/design.md). Returns whether glibc took both settings.
    """
    name = ctypes.util.find_library("c")
    if name is None or "libc.so" not in name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
        )
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def available_bytes() -> int | None:
    """Memory this process may still use: the kernel's MemAvailable, or less under a cgroup limit (SLURM)."""
    candidates = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    candidates.extend(_cgroup_room())
    return min(candidates) if candidates else None


def memory_limit() -> int | None:
    """All the memory this process could ever have: the machine's, or less under a cgroup limit (SLURM).
    (For sizes no run could fit whatever else is running; ``available_bytes`` is what is left now.)"""
    candidates = []
    try:
        candidates.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        pass
    limit = _cgroup_file("memory.max")
    if limit is not None and limit.isdigit():  # ("max": no limit)
        candidates.append(int(limit))
    return min(candidates) if candidates else None


def _cgroup_file(name: str) -> str | None:
    """A file of this process's cgroup v2 directory, stripped, or None."""
    try:
        rel = next(
            line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines() if line[:3] == "0::"
        )
        return (Path("/sys/fs/cgroup") / rel.strip().lstrip("/") / name).read_text().strip()
    except (OSError, StopIteration):
        return None


def _cgroup_room() -> list[int]:
    """The room left under this process's cgroup v2 memory limit, if it has one."""
    limit, used = _cgroup_file("memory.max"), _cgroup_file("memory.current")
    if limit is None or not limit.isdigit() or used is None or not used.isdigit():  # ("max": no limit)
        return []
    return [max(0, int(limit) - int(used))]


def cpus_allowed() -> int:
    """CPUs this process may run on: its affinity mask (taskset, SLURM's cgroups), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
