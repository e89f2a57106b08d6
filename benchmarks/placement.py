"""CPU placement of a case's processes: "same" CPU for all, "split" host/workers, or "unpinned".

No untrusted input. On these VMs a wake-up across vCPUs costs 25-35 us and dominates a small
round trip, so every case pins its processes the same way or results flip between runs:

    same      the case's host process and every process it starts on one CPU (the default);
              set on the host before the contender starts, so children inherit it
    split     host on one CPU, its workers (and handlerbox's zygote) on another, set on the
              worker pids after they start and again before every measurement
    unpinned  the scheduler decides

Affinity is per thread on Linux, so every thread of a process is moved, not just its main one.
"""

from __future__ import annotations

import os
from typing import Any

PLACEMENTS = ("same", "split", "unpinned")


def plan(name: str) -> dict[str, Any]:
    """The CPUs a placement uses on this machine, and a line saying so."""
    cpus = sorted(os.sched_getaffinity(0))
    host = cpus[0]
    worker = cpus[1] if len(cpus) > 1 else cpus[0]
    if name == "same":
        return {"name": name, "host_cpu": host, "worker_cpu": host,
                "describe": f"same: every process of a case on CPU {host}"}
    if name == "split":
        note = "" if worker != host else " (only one CPU available: same as 'same')"
        return {"name": name, "host_cpu": host, "worker_cpu": worker,
                "describe": f"split: host on CPU {host}, workers on CPU {worker}{note}"}
    if name == "unpinned":
        return {"name": name, "host_cpu": None, "worker_cpu": None,
                "describe": f"unpinned: the scheduler places processes on CPUs {cpus}"}
    raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}; got {name!r}")


def before_start(placement: dict[str, Any]) -> None:
    """In the case's host process, before the contender starts: children inherit this."""
    if placement["name"] in ("same", "split"):
        pin_process(os.getpid(), {placement["worker_cpu"]})


def after_start(placement: dict[str, Any]) -> None:
    """Once the contender runs: for split, move the host off the workers' CPU."""
    if placement["name"] == "split":
        pin_process(os.getpid(), {placement["host_cpu"]})
        refresh(placement)


def refresh(placement: dict[str, Any]) -> None:
    """Before a measurement: for split, put workers started since (replacements, spares,
    restarted pool workers forked from the host) back on the workers' CPU."""
    if placement["name"] != "split":
        return
    import psutil

    wanted = {placement["worker_cpu"]}
    for child in psutil.Process().children(recursive=True):
        try:
            if set(child.cpu_affinity()) != wanted:
                pin_process(child.pid, wanted)
        except (psutil.Error, OSError):
            pass  # it exited meanwhile


def pin_process(pid: int, cpus: set[int]) -> None:
    """Set the affinity of every thread of `pid`."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass  # the thread exited meanwhile


def affinity_of_tree() -> dict[int, list[int]]:
    """pid -> CPUs of this process and all its descendants (recorded in the results)."""
    import psutil

    me = psutil.Process()
    tree = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            tree[process.pid] = sorted(process.cpu_affinity() or [])
        except psutil.Error:
            pass
    return tree
