"""CPU threads for torch's kernels: as many as the cores this process may run on
(`os.sched_getaffinity`: what taskset, a cgroup's cpuset or a batch scheduler leave it), not the
machine's count, or `--threads N`. Threads beyond the cores a process may use spin against each
other: three processes of default threads on 2 cores ran a stage 7x slower (docs/benchmarks.md)."""

from __future__ import annotations

import os
import sys


def usable_cores() -> int:
    """The cores this process may run on (all of them where the platform cannot say)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads: `n`, else OMP_NUM_THREADS when the user set it, else the usable
    cores. Never imports torch (a fully cached run answers without it): OMP_NUM_THREADS is what a
    torch imported later reads, and a torch already imported is set directly. Returns the number."""
    if n is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        n = int(env) if env.isdigit() and int(env) > 0 else usable_cores()
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n
