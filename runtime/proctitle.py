"""Process titles, so `ps` shows which app and installation a worker serves.

The text may carry names from apps and payloads (untrusted): control characters are replaced
and the title is clipped. Import this module in the zygote, before any fork: setproctitle's C
extension links libpthread, which Landlock hides from a worker, so importing it there would
silently fall back to a title that never changes. After the import, setting a title costs one
prctl(PR_SET_NAME), which the worker's seccomp filter allows, and a write to the process's own
argv memory, which /proc/PID/cmdline (and so ps) shows.
"""

from __future__ import annotations

import setproctitle

MAX_TITLE = 200
"""Characters kept of a title (the kernel shows the first 15 as the thread name)."""

_UNPRINTABLE = {c: "?" for c in (*range(0x20), *range(0x7F, 0xA0))}  # C0, DEL, C1


def set_title(text: str) -> None:
    """Set this process's title; never raises (a title is for operators only)."""
    try:
        setproctitle.setproctitle(text.translate(_UNPRINTABLE)[:MAX_TITLE])
    except Exception:  # a missing title must not stop a worker
        pass


def available() -> bool:
    """Whether setproctitle's C extension loaded (without it titles do not change)."""
    return hasattr(setproctitle, "_setproctitle")
