"""rlimits applied inside a worker before any handler code runs; stdlib only.

Limits are data: the host sends {"memory_bytes": ..., "cpu_seconds": ...} and the worker sets
each with soft = hard, so a handler could not raise them again even if it reached setrlimit.
"""

from __future__ import annotations

import resource
from typing import Any

RLIMITS = {
    "memory_bytes": resource.RLIMIT_AS,      # overruns surface as MemoryError
    "cpu_seconds": resource.RLIMIT_CPU,      # a backstop: accumulates over a worker's life
    "file_bytes": resource.RLIMIT_FSIZE,     # handlers write no files
    "core_bytes": resource.RLIMIT_CORE,      # no core dumps of handler memory
    "open_files": resource.RLIMIT_NOFILE,
    "processes": resource.RLIMIT_NPROC,      # ignored for root: seccomp covers it
}


def apply(limits: dict[str, Any]) -> None:
    """Set each given rlimit with soft = hard (lowering only: never above the current hard)."""
    for name, value in limits.items():
        which = RLIMITS[name]
        _, hard = resource.getrlimit(which)
        value = int(value)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
