"""CPU time a process has used so far, all its threads, in nanoseconds (Linux /proc).

schedstat counts in ns, where /proc/<pid>/stat counts 10 ms ticks: too coarse for a few
hundred requests of a few hundred microseconds each.
"""

from __future__ import annotations

import os


def cpu_ns(pid: int) -> int:
    """Sum of the on-CPU time of every live thread of `pid` (threads that exited are lost)."""
    total = 0
    task_dir = f"/proc/{pid}/task"
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited between listdir and open
    return total


class CpuMeter:
    """CPU used by a set of named processes between `start()` and `stop()`, per request."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._before: dict[str, int] = {}
        self.used_ns: dict[str, int] = {}

    def start(self) -> None:
        self._before = {name: cpu_ns(pid) for name, pid in self._pids.items()}

    def stop(self) -> dict[str, int]:
        self.used_ns = {name: cpu_ns(pid) - self._before[name] for name, pid in self._pids.items()}
        return self.used_ns

    def per_request_us(self, requests: int) -> dict[str, float]:
        return {name: ns / 1000 / requests for name, ns in self.used_ns.items()}
