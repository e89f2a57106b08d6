"""Timing loops and their summaries: percentiles, CDF points, and a bounded in-flight window.

No untrusted input. Latencies travel as integer nanoseconds and are summarised in microseconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

CDF_FRACTIONS = ([i / 100 for i in range(91)] + [0.9 + i / 1000 for i in range(1, 100)]
                 + [1.0])
"""Where each latency summary samples its distribution for the chart: every 1 % up to p90,
then every 0.1 % up to p99.9, then the maximum."""


def time_calls(call: Callable[[], Any], calls: int, warmup: int = 0) -> list[int]:
    """Nanoseconds of each of `calls` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        call()
        samples.append(clock() - start)
    return samples


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted data, q in [0, 100]."""
    if not ordered:
        return math.nan
    rank = max(math.ceil(q / 100.0 * len(ordered)) - 1, 0)
    return float(ordered[min(rank, len(ordered) - 1)])


def summarise_ns(samples: Sequence[int]) -> dict[str, Any]:
    """p50/p90/p99/mean/min/max in microseconds, the count, and [fraction, us] pairs of the
    distribution for the chart."""
    ordered = sorted(s / 1000.0 for s in samples)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50_us": percentile(ordered, 50), "p90_us": percentile(ordered, 90),
        "p99_us": percentile(ordered, 99), "mean_us": sum(ordered) / len(ordered),
        "min_us": ordered[0], "max_us": ordered[-1],
        "cdf_us": [[q, round(percentile(ordered, 100.0 * q), 2)] for q in CDF_FRACTIONS],
    }


def median(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


def windowed(submit: Callable[[Callable[[Any], None]], None], tasks: int,
             in_flight: int) -> dict[str, Any]:
    """Run `tasks` tasks keeping `in_flight` outstanding; `submit(done)` starts one task and
    arranges for `done(error_or_None)` when it ends. Returns seconds and the error count."""
    slots = threading.Semaphore(in_flight)
    finished = threading.Event()
    lock = threading.Lock()
    state = {"left": tasks, "errors": 0}

    def done(error: Any) -> None:
        with lock:
            state["left"] -= 1
            state["errors"] += error is not None
            last = state["left"] == 0
        slots.release()
        if last:
            finished.set()

    start = time.perf_counter()
    for _ in range(tasks):
        slots.acquire()
        submit(done)
    finished.wait()
    return {"seconds": time.perf_counter() - start, "tasks": tasks, "errors": state["errors"]}
