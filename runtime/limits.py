"""OS limits applied inside a worker before any handler code runs; stdlib only.

Limits are data: the host sends {"memory_bytes": ..., "cpu_seconds": ...} at bind and the
worker turns it into rlimits with soft = hard, so a handler cannot raise them again.
"""

from __future__ import annotations

import resource
from typing import Any

_RLIMITS = {
    "memory_bytes": resource.RLIMIT_AS,      # overruns surface as MemoryError
    "cpu_seconds": resource.RLIMIT_CPU,      # a backstop: accumulates over a worker's life
    "file_bytes": resource.RLIMIT_FSIZE,
    "core_bytes": resource.RLIMIT_CORE,
}


def apply(limits: dict[str, Any]) -> None:
    """Set each given rlimit with soft = hard (lowering only: never above the current hard)."""
    for name, value in limits.items():
        which = _RLIMITS[name]
        _, hard = resource.getrlimit(which)
        value = int(value)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))
