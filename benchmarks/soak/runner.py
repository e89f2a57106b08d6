"""run(): one soak run, from loading the apps to closing the engine, and its report.

No untrusted input. Starts the process watcher, the injector and the callers, waits for the
traffic to end (or its callers to hang), closes the engine, looks for orphans, then judges.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handlerbox.benchmarks.soak.apps import load_apps
from handlerbox.benchmarks.soak.checks import evaluate
from handlerbox.benchmarks.soak.classes import Schedule
from handlerbox.benchmarks.soak.findings import Findings
from handlerbox.benchmarks.soak.injector import Injector
from handlerbox.benchmarks.soak.processes import Watcher, find_orphans
from handlerbox.benchmarks.soak.report import summarize
from handlerbox.benchmarks.soak.tally import CallerStats
from handlerbox.benchmarks.soak.traffic import Context, start_callers

if TYPE_CHECKING:
    from handlerbox import Engine


def run(seconds: float, apps: int = 20, workers: int = 2, threads: int = 8, *,
        async_tasks: int = 2, timeout: float = 0.3, spin_seconds: float = 3.0,
        kill_cpu_ms: float = 30.0, slow_slots: int | None = None,
        warmup: float | None = None, rss_bound_mb: float = 50.0, p99_ms: float = 500.0,
        seed: int = 0, quick: bool = False, max_requests: int | None = None
        ) -> dict[str, Any]:
    """Run the soak and return its figures and checks (see the package docstring). Traffic
    stops after `seconds`, or `max_requests` requests if that comes first (a multiple of 100
    gives the mix exactly); `quick` reports the host-RSS and p99 checks without enforcing
    them."""
    from handlerbox import Engine

    if threads + async_tasks < 1:
        raise ValueError("the soak needs at least one thread or async task")
    slow_slots = slow_slots if slow_slots is not None else max(1, workers - 1)
    warmup = warmup if warmup is not None else min(10.0, seconds * 0.2)
    directory = tempfile.TemporaryDirectory(prefix="handlerbox-soak-")
    began_wall = time.time() - 1.0  # start times are rounded to clock ticks
    engine = Engine(workers=workers)
    closed = False
    try:
        groups = load_apps(engine, Path(directory.name), apps, timeout)
        longest = max(app.execution_timeout for members in groups.values()
                      for _, app in members)
        started = time.monotonic()
        stop_at = started + seconds
        watcher = Watcher(engine, started + warmup)
        injector = Injector(engine, kill_cpu_ms)
        ctx = Context(engine, groups, Schedule(seed, max_requests), injector, watcher,
                      threading.BoundedSemaphore(slow_slots),
                      {app.key: threading.Lock() for _, app in groups["victims"]},
                      stop_at, spin_seconds)
        watcher.start()
        injector.start()
        stats, callers = start_callers(ctx, threads, async_tasks, seed)
        # In flight at the stop: a wait for a worker and a run, each up to the longest
        # deadline, a spinning kill target, and slow-slot waits behind them.
        join_by = stop_at + 2 * longest + spin_seconds + 30.0
        for thread in callers:
            thread.join(max(0.0, join_by - time.monotonic()))
        hung_threads = [t.name for t in callers if t.is_alive()]
        traffic_seconds = time.monotonic() - started
        watcher.stop()
        watcher.join()
        injector.stop()
        injector.join()
        watcher.scan()
        watcher.prune()
        rss_end = watcher.rss()
        spawns: int | None = getattr(engine._spawner, "_next_id", None)
        close_start = time.monotonic()
        _close(engine, drain=not hung_threads)  # a hung dispatch must not hang the close too
        closed = True
        close_ms = (time.monotonic() - close_start) * 1000.0
        orphans, leftovers = find_orphans(watcher, began_wall)
    finally:
        if not closed:
            _close(engine, drain=False)
        directory.cleanup()

    found = Findings(
        callers=CallerStats.merged(stats), hung_threads=hung_threads,
        kills_injected=injector.kills, kill_delays_ms=injector.kill_delays_ms,
        processes_seen=watcher.seen_total, zygotes=len(watcher.zygotes),
        distinct_worker_pids=watcher.distinct_worker_pids(), orphans=orphans,
        leftovers=leftovers,
        rss_warm=watcher.rss_warm if watcher.rss_warm is not None else rss_end,
        rss_end=rss_end, rss_peak=watcher.rss_peak, traffic_seconds=traffic_seconds,
        close_ms=close_ms, spawns=spawns)
    settings = {"seconds": seconds, "apps": apps, "workers": workers, "threads": threads,
                "async_tasks": async_tasks, "timeout_s": timeout,
                "spin_seconds": spin_seconds, "kill_cpu_ms": kill_cpu_ms,
                "slow_slots": slow_slots, "warmup_s": warmup, "seed": seed,
                "quick": quick, "max_requests": max_requests,
                "groups": {g: len(m) for g, m in groups.items()}}
    return summarize(found, settings, evaluate(found, rss_bound_mb=rss_bound_mb,
                                               p99_bound_ms=p99_ms, quick=quick))


def _close(engine: Engine, drain: bool) -> None:
    """engine.close(drain=...) where the engine has it (older engines: close())."""
    try:
        engine.close(drain=drain)
    except TypeError:
        engine.close()
