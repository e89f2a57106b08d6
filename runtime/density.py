"""Warm idle workers, kept for their installations within a memory cap, least recently used
evicted first. No untrusted input; no threads (the pool calls it under its lock, and measures
from its keeper thread, outside the lock).

Idle memory is the sum of each idle worker's USS, the pages only that worker holds. The pages
it still shares with the zygote (interpreter, sandbox, facades: gc.freeze keeps them shared)
belong to the zygote and count once there, however many workers map them. A worker is measured
with psutil some time after it first goes idle, and again, if it served since, at most every
REMEASURE_SECONDS; until then it counts as a typical worker (the median of recent measurements).
A measurement costs about 1 ms of the host's CPU (the kernel walks the worker's page tables).

Measuring also bounds the CPU a worker may spend between invocations (preparing the next one):
more than IDLE_CPU_SECONDS beyond the CPU its invocations reported and it is evicted.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass

from handlerbox.runtime.spawner import WorkerProcess

TYPICAL_WORKER_BYTES = 3 << 20
"""A bound worker's USS before any was measured (about 2.9 MiB on Linux 6, CPython 3.11)."""

MEASURE_EVERY = 1024
"""Invocations between two looks at whether a serving worker is due for a measurement."""

REMEASURE_SECONDS = 300.0
"""A worker measured this long ago that served since is measured again (its memory may have
grown; recycle_rss_mb bounds the growth meanwhile)."""

IDLE_CPU_SECONDS = 2.0
"""CPU a worker may spend outside its invocations (start-up, bind, preparing the next call)
before it is evicted: a module body that runs on long after the reply would burn it idle."""


@dataclass
class Measured:
    """One worker's last measurement: its private memory and its total CPU time so far."""

    uss: int
    cpu_seconds: float
    at: float
    """time.monotonic() of the measurement"""
    invocations: int
    """how many the worker had served then"""


class WarmSet:
    """The idle bound workers: per installation (most recently used first) and overall (least
    recently used first), with their memory."""

    def __init__(self, cap_bytes: int, max_workers: int = 1 << 30) -> None:
        self.cap = cap_bytes
        self.max_workers = max_workers
        self.idle_bytes = 0
        self._by_key: dict[str, list[WorkerProcess]] = {}
        self._lru: OrderedDict[WorkerProcess, int] = OrderedDict()
        """Idle worker -> the bytes it counts for (its measured USS, or the typical)."""
        self._measured: dict[WorkerProcess, Measured] = {}
        self._recent: deque[int] = deque([TYPICAL_WORKER_BYTES], maxlen=64)
        self.typical = TYPICAL_WORKER_BYTES

    def __len__(self) -> int:
        return len(self._lru)

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(list(self._lru))

    def __contains__(self, worker: object) -> bool:
        return worker in self._lru

    # -- idle workers ------------------------------------------------------------------------

    def take(self, key: str) -> WorkerProcess | None:
        """The most recently used idle worker of installation `key`, out of the set."""
        stack = self._by_key.get(key)
        if not stack:
            return None
        worker = stack.pop()
        if not stack:
            del self._by_key[key]
        self.idle_bytes -= self._lru.pop(worker)
        return worker

    def put(self, worker: WorkerProcess, key: str) -> bool:
        """An idle worker of `key`, now the most recently used of all; True when the idle
        workers are now over the cap (see over_cap)."""
        measured = self._measured.get(worker)
        size = measured.uss if measured is not None else self.typical
        stack = self._by_key.get(key)
        if stack is None:
            self._by_key[key] = [worker]
        else:
            stack.append(worker)
        lru = self._lru
        lru[worker] = size
        self.idle_bytes += size
        return self.idle_bytes > self.cap or len(lru) > self.max_workers

    def remove(self, worker: WorkerProcess) -> bool:
        """Take a given worker out (it died, or is evicted); False if it was not idle."""
        size = self._lru.pop(worker, None)
        if size is None:
            return False
        self.idle_bytes -= size
        key = worker.app_key or ""
        stack = self._by_key.get(key)
        if stack is not None:
            stack.remove(worker)
            if not stack:
                del self._by_key[key]
        return True

    def over_cap(self, adding: int = 0) -> list[WorkerProcess]:
        """Evict least recently used idle workers until the idle ones, plus `adding` typical
        workers about to join, fit the memory cap and the count; returns the evicted (for the
        caller to kill)."""
        evicted = []
        extra = adding * self.typical
        while self._lru and (self.idle_bytes + extra > self.cap
                             or len(self._lru) + adding > self.max_workers):
            worker = next(iter(self._lru))
            self.remove(worker)
            evicted.append(worker)
        return evicted

    def matching(self, prefix: str) -> list[WorkerProcess]:
        """Idle workers whose installation key starts with `prefix`, out of the set."""
        gone = [w for w in self._lru if (w.app_key or "").startswith(prefix)]
        for worker in gone:
            self.remove(worker)
        return gone

    def of(self, key: str) -> list[WorkerProcess]:
        """Idle workers of exactly installation `key`, out of the set."""
        gone = list(self._by_key.get(key, ()))
        for worker in gone:
            self.remove(worker)
        return gone

    def clear(self) -> list[WorkerProcess]:
        everyone = list(self._lru)
        self._lru.clear()
        self._by_key.clear()
        self._measured.clear()
        self.idle_bytes = 0
        return everyone

    # -- measurement ---------------------------------------------------------------------------

    def due(self) -> list[WorkerProcess]:
        """Idle workers never measured, or not for REMEASURE_SECONDS and serving since."""
        stale = time.monotonic() - REMEASURE_SECONDS
        return [w for w in self._lru
                if (m := self._measured.get(w)) is None
                or (m.at < stale and w.invocations != m.invocations)]

    def record(self, worker: WorkerProcess, measured: Measured) -> None:
        """A measurement taken outside the lock; an idle worker now counts for it."""
        self._measured[worker] = measured
        self._recent.append(measured.uss)
        self.typical = sorted(self._recent)[len(self._recent) // 2]
        counted = self._lru.get(worker)
        if counted is not None:
            self._lru[worker] = measured.uss
            self.idle_bytes += measured.uss - counted

    def forget(self, worker: WorkerProcess) -> None:
        """A worker is gone: drop its measurement."""
        self._measured.pop(worker, None)

    def burning(self, worker: WorkerProcess, measured: Measured) -> bool:
        """Whether a worker spent more CPU outside its invocations than it may."""
        return measured.cpu_seconds - worker.cpu_ms / 1000.0 > IDLE_CPU_SECONDS


def measure(worker: WorkerProcess) -> Measured | None:
    """A worker's USS and CPU time now (psutil; about 1 ms: the kernel walks its page
    tables), or None when it is gone or cannot be read."""
    import psutil

    try:
        process = psutil.Process(worker.pid)
        with process.oneshot():
            uss = process.memory_full_info().uss
            times = process.cpu_times()
    except (psutil.Error, OSError):
        return None
    return Measured(uss, times.user + times.system, time.monotonic(), worker.invocations)


def cpu_seconds(pid: int) -> float | None:
    """A process's CPU time (user + system) from /proc/PID/stat: a cheap read (no page-table
    walk), for the idle sweep; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (IndexError, ValueError):
        return None


_TICKS = float(os.sysconf("SC_CLK_TCK"))


def max_idle_workers(reserve: int = 256) -> int:
    """How many idle workers this process's file-descriptor limit leaves room for: each holds
    two pipe ends in the host; `reserve` stays for everything else."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max((soft - reserve) // 2, 8)
