"""Fairness: app A floods the engine with slow handlers; how fast are app B's trivial dispatches?

No untrusted input. One engine, `budget` workers, at most `cap` of them for any one app
(max_concurrency_per_app). `flood` threads keep A's dispatches in flight all the time: each
handler of tests/apps/fair_slow spins for `seconds` of wall time, so A always runs `cap`
handlers and queues the rest. Meanwhile B (tests/apps/bench_call_create, the latency
question's handler) is dispatched back to back and timed. Ops:

    latency(calls, warmup)   nanoseconds per B dispatch, B's errors, and A's state: handlers
                             running, waiting, and finished (with their outcomes) so far
"""

from __future__ import annotations

import threading
import time
from typing import Any

from handlerbox.benchmarks import payloads
from handlerbox.benchmarks.engines import pool_engine


class Fairness:
    def __init__(self, config: dict[str, Any]) -> None:
        self.seconds = float(config["seconds"])
        self.cap = int(config["cap"])
        self.engine, self.configured_on_pool = pool_engine(
            int(config["budget"]), spares=1, max_concurrency_per_app=self.cap)
        # A's dispatches may wait for a slot behind the rest of the flood: room for that.
        self.slow = self.engine.load_app(payloads.SLOW_APP,
                                         timeout=self.seconds * (int(config["flood"]) + 2))
        self.fast = self.engine.load_app(payloads.CALL_APP)
        self.payload = payloads.payload("350")
        self.slow_payload = {**payloads.payload("350"), "data": {"seconds": self.seconds}}
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.a_outcomes: dict[str, int] = {}
        for _ in range(int(config.get("setup_warmup", 20))):
            self.check(self.engine.dispatch(self.fast, self.payload))
        self.flood = [threading.Thread(target=self.flood_one, daemon=True)
                      for _ in range(int(config["flood"]))]
        for thread in self.flood:
            thread.start()
        deadline = time.monotonic() + 30
        while self.engine.stats()["busy"] < self.cap:  # A runs as many as it may
            if time.monotonic() > deadline:
                raise RuntimeError(f"the flood never ran: {self.engine.stats()}")
            time.sleep(0.01)

    def describe(self) -> dict[str, Any]:
        return {"caps_set_on_pool": self.configured_on_pool, "seconds": self.seconds,
                "cap": self.cap}

    def check(self, result: Any) -> None:
        if result.outcome != "ok":
            raise RuntimeError(f"B's dispatch ended {result.outcome}: {result.error}")

    def flood_one(self) -> None:
        while not self.stopping.is_set():
            outcome = self.engine.dispatch(self.slow, self.slow_payload).outcome
            with self.lock:
                self.a_outcomes[outcome] = self.a_outcomes.get(outcome, 0) + 1

    def latency(self, calls: int, warmup: int) -> dict[str, Any]:
        engine, app, payload = self.engine, self.fast, self.payload
        clock = time.perf_counter_ns
        samples, errors = [], 0
        before = engine.stats()
        for i in range(warmup + calls):
            start = clock()
            result = engine.dispatch(app, payload)
            elapsed = clock() - start
            if i >= warmup:
                samples.append(elapsed)
                errors += result.outcome != "ok"
        after = engine.stats()
        with self.lock:
            finished = dict(self.a_outcomes)
        return {"samples_ns": samples, "errors": errors, "a_finished": finished,
                "a_running": min(before["busy"], after["busy"]),
                "a_waiting": min(before["waiting"], after["waiting"])}

    def close(self) -> None:
        self.stopping.set()
        self.engine.close(drain=False)  # A's handlers in flight end as crashed: not measured
        for thread in self.flood:
            thread.join(10)
