"""Timeout recovery: a handler that never returns, under a short limit; how late is the timeout
result, and how soon does the pool serve the next call at normal latency?

No untrusted input. One trial, from the caller's side, with the deadline at call start + limit:

    1. time a few normal calls of the same app: normal = at most 2 x their median
    2. call the never-returning handler; `late_ms` = result time - deadline
    3. call the normal handler of the same app back to back until one takes normal time;
       `recovery_ms` = that call's end - deadline (the first is `first_call_ms`)

    handlerbox_timeout  Engine(N, spares=1), tests/apps/bench_forever loaded with timeout=limit
    pebble_timeout      pebble.ProcessPool(N).schedule(spin, timeout=limit)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from handlerbox.benchmarks import payloads, work
from handlerbox.benchmarks.stats import median, time_calls

MAX_RECOVERY_SECONDS = 5.0
BASELINE_CALLS = 30


def trial(limit: float, never_returns: Callable[[], None],
          normal: Callable[[], Any]) -> dict[str, Any]:
    baseline_us = median(time_calls(normal, BASELINE_CALLS, 5)) / 1000.0
    threshold_s = 2 * baseline_us / 1e6
    clock = time.perf_counter
    start = clock()
    never_returns()
    returned = clock()
    deadline = start + limit
    calls, first_call, recovered = 0, None, False
    while True:
        call_start = clock()
        normal()
        end = clock()
        calls += 1
        first_call = end - call_start if first_call is None else first_call
        if end - call_start <= threshold_s:
            recovered = True
            break
        if end - returned > MAX_RECOVERY_SECONDS:
            break
    return {"late_ms": (returned - deadline) * 1e3, "recovery_ms": (end - deadline) * 1e3,
            "first_call_ms": first_call * 1e3, "calls_to_normal": calls,
            "normal_us": baseline_us, "recovered": recovered}


class HandlerboxTimeout:
    def __init__(self, config: dict[str, Any]) -> None:
        from handlerbox import Engine

        self.limit = float(config["limit"])
        self.engine = Engine(workers=int(config["workers"]), spares=1)
        self.app = self.engine.load_app(payloads.FOREVER_APP, timeout=self.limit)
        self.spin_payload = payloads.payload("350", "onCallCreate")
        self.normal_payload = payloads.payload("350", "onCallUpdate")
        self.normal()
        time_calls(self.normal, int(config.get("setup_warmup", 100)))

    def normal(self) -> None:
        result = self.engine.dispatch(self.app, self.normal_payload)
        if result.outcome != "ok":
            raise RuntimeError(f"the normal call ended {result.outcome}: {result.error}")

    def never_returns(self) -> None:
        result = self.engine.dispatch(self.app, self.spin_payload)
        if result.outcome != "timeout":
            raise RuntimeError(f"the spinning call ended {result.outcome}, not timeout")

    def trial(self) -> dict[str, Any]:
        return trial(self.limit, self.never_returns, self.normal)

    def close(self) -> None:
        self.engine.close()


class PebbleTimeout:
    def __init__(self, config: dict[str, Any]) -> None:
        import pebble

        self.limit = float(config["limit"])
        self.pool = pebble.ProcessPool(max_workers=int(config["workers"]))
        self.payload = payloads.payload("350")
        time_calls(self.normal, int(config.get("setup_warmup", 100)))

    def normal(self) -> None:
        self.pool.schedule(work.handle, [self.payload], timeout=20.0).result()

    def never_returns(self) -> None:
        future = self.pool.schedule(work.spin, [self.payload], timeout=self.limit)
        try:
            future.result()
        except TimeoutError:
            return
        raise RuntimeError("the spinning task returned")

    def trial(self) -> dict[str, Any]:
        return trial(self.limit, self.never_returns, self.normal)

    def close(self) -> None:
        self.pool.stop()  # type: ignore[no-untyped-call]
        self.pool.join()
