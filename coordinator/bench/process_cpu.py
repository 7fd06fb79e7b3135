"""CPU time of processes from /proc: one process, or a process and all its descendants."""

from __future__ import annotations

import os

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_seconds(pid: int, first: int) -> float:
    """Fields `first` and `first + 1` of /proc/PID/stat (after the command name), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[first]) + int(fields[first + 1])) / _TICKS


def system_busy_s() -> float:
    """Busy CPU seconds of the whole machine since boot, all cores (/proc/stat, less idle and iowait)."""
    with open("/proc/stat") as handle:
        times = [int(value) for value in handle.readline().split()[1:]]
    idle = times[3] + times[4]
    return (sum(times) - idle) / _TICKS


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one live process (0 if it is gone)."""
    return _stat_seconds(pid, 11)


def _reaped_children_cpu_s(pid: int) -> float:
    return _stat_seconds(pid, 13)


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and every descendant: live ones' own time plus what each has reaped
    (a child that exited counts in its parent once reaped). The difference of two readings is what
    the tree spent in between, whichever of its processes came and went."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        total += process_cpu_s(current) + _reaped_children_cpu_s(current)
        pending += children(current)
    return total
