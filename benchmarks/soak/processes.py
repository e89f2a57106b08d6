"""The engine's processes, tracked for the orphan check, and the host's RSS, from one thread.

No untrusted input. Every process ever seen (each result's worker_pid, the zygote and its
children, sampled every 0.1 s) is tracked as pid + start time, so reused pids are not
confused; after engine.close() each must be gone within ORPHAN_GRACE_SECONDS.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, TypedDict

import psutil

if TYPE_CHECKING:
    from handlerbox import Engine

ORPHAN_GRACE_SECONDS = 3.0
SAMPLE_SECONDS = 0.1


class ProcessInfo(TypedDict):
    """A process still alive after the close."""

    pid: int
    status: str
    zygote: bool | None
    """Whether it is the zygote; None for an untracked one found among our descendants."""


class Watcher(threading.Thread):
    """Records every engine process (zygote, its children, each result's worker_pid) as
    (pid, start time), checked to be ours when first seen: the zygote is the engine's, a
    worker's parent is a zygote. Dead ones are pruned, so the set stays as small as the live
    tree (a dead process cannot come back; a reused pid has another start time). Samples the
    host's RSS too."""

    def __init__(self, engine: Engine, warm_at: float) -> None:
        super().__init__(daemon=True, name="soak-watcher")
        self.engine = engine
        self.warm_at = warm_at
        self.me = psutil.Process()
        self.tracked: dict[int, float] = {}
        self.zygotes: dict[int, float] = {}
        self.seen_total = 0
        self.result_pids: deque[int] = deque()
        self.pid_bits = bytearray(_pid_max() // 8 + 1)  # every worker_pid, in 4 KiB-512 KiB
        self.rss_warm: int | None = None
        self.rss_peak = 0
        self._stop_event = threading.Event()

    def note_pid(self, pid: int | None) -> None:
        if pid is not None:
            self.result_pids.append(pid)  # deque.append is atomic: callers never wait

    def stop(self) -> None:
        self._stop_event.set()

    def rss(self) -> int:
        """This (the host) process's RSS in bytes."""
        return int(self.me.memory_info().rss)

    def distinct_worker_pids(self) -> int:
        return sum(byte.bit_count() for byte in self.pid_bits)

    def run(self) -> None:
        last_prune = time.monotonic()
        while not self._stop_event.wait(SAMPLE_SECONDS):
            self.scan()
            rss = self.rss()
            self.rss_peak = max(self.rss_peak, rss)
            if self.rss_warm is None and time.monotonic() >= self.warm_at:
                self.rss_warm = rss
            if time.monotonic() - last_prune >= 1.0:
                self.prune()
                last_prune = time.monotonic()

    def scan(self) -> None:
        zygote = self.engine._spawner.zygote_pid
        if zygote is not None and zygote not in self.zygotes:
            try:
                process = psutil.Process(zygote)
                if process.ppid() == os.getpid():
                    self.zygotes[zygote] = process.create_time()
                    self._track(zygote, self.zygotes[zygote])
            except psutil.Error:
                pass
        candidates = [w.pid for w in self.engine.workers()]
        for z in list(self.zygotes):
            candidates.extend(_children(z))
        while self.result_pids:
            pid = self.result_pids.popleft()
            if pid < len(self.pid_bits) * 8:
                self.pid_bits[pid >> 3] |= 1 << (pid & 7)
            candidates.append(pid)
        for pid in candidates:
            if pid in self.tracked:
                continue
            try:
                process = psutil.Process(pid)
                if process.ppid() in self.zygotes:
                    self._track(pid, process.create_time())
            except psutil.Error:
                pass  # already gone: it cannot be an orphan

    def _track(self, pid: int, created: float) -> None:
        if self.tracked.get(pid) != created:
            self.tracked[pid] = created
            self.seen_total += 1

    def prune(self) -> None:
        for pid, created in list(self.tracked.items()):
            if _alive(pid, created) is None:
                del self.tracked[pid]

    def leftovers(self) -> list[ProcessInfo]:
        """Tracked processes still alive (zombies included, marked as such)."""
        found: list[ProcessInfo] = []
        for pid, created in self.tracked.items():
            status = _alive(pid, created)
            if status is not None:
                found.append({"pid": pid, "status": status, "zygote": pid in self.zygotes})
        return found


def find_orphans(watcher: Watcher, began_wall: float
                 ) -> tuple[list[ProcessInfo], list[ProcessInfo]]:
    """Once the engine is closed: the orphans, and the tracked processes still alive (the
    orphans and reparented zombies), after waiting up to ORPHAN_GRACE_SECONDS for them to go.
    `began_wall` is when the run began (time.time())."""
    leftovers = watcher.leftovers()
    grace_end = time.monotonic() + ORPHAN_GRACE_SECONDS
    while leftovers and time.monotonic() < grace_end:
        time.sleep(0.05)
        leftovers = watcher.leftovers()
    # Zombies are dead: only ours to reap if their parent is this process.
    orphans = [p for p in leftovers if p["status"] != psutil.STATUS_ZOMBIE
               or _parent(p["pid"]) == os.getpid()]
    # Belt and braces: no descendant of this process started during the run from the
    # zygote's command line may be alive, tracked or not.
    listed = {p["pid"] for p in orphans}
    orphans += [p for p in _engine_descendants(began_wall) if p["pid"] not in listed]
    return orphans, leftovers


def _engine_descendants(since: float) -> list[ProcessInfo]:
    found: list[ProcessInfo] = []
    for process in psutil.Process().children(recursive=True):
        try:
            if (process.create_time() >= since and process.status() != psutil.STATUS_ZOMBIE
                    and "handlerbox zygote" in " ".join(process.cmdline())):
                found.append({"pid": process.pid, "status": str(process.status()),
                              "zygote": None})
        except psutil.Error:
            continue
    return found


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 22


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    except (OSError, ValueError):
        return []


def _parent(pid: int) -> int | None:
    try:
        return int(psutil.Process(pid).ppid())
    except psutil.Error:
        return None


def _alive(pid: int, created: float) -> str | None:
    """The process's status if `pid` is still the process started at `created`."""
    try:
        process = psutil.Process(pid)
        if process.create_time() != created:
            return None
        return str(process.status())
    except psutil.Error:
        return None
