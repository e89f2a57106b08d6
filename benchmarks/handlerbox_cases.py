"""handlerbox through its public API: Engine.dispatch (sync) and Engine.dispatch_async.

No untrusted input beyond what the engine itself handles. The engine runs with N workers and
one spare, the app is tests/apps/bench_call_create, and the payload is a dict, as a caller
would pass it (so validation, routing, the pipe round trip and the result are all timed).

    handlerbox_sync    ops: latency(calls, warmup, size); throughput(tasks, in_flight) with
                       `in_flight` threads each calling engine.dispatch ("threads")
    handlerbox_async   ops: latency(calls, warmup, size); throughput(tasks, in_flight) with
                       `in_flight` asyncio tasks awaiting engine.dispatch_async

Throughput also reports what the callers saw: each dispatch's p99 and worst time, and the
fewest and most dispatches one caller got done (fairness among the callers under load).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from handlerbox import Engine, InvocationResult
from handlerbox.benchmarks import payloads
from handlerbox.benchmarks.stats import percentile, time_calls


def waits(durations_ns: list[int], per_caller: list[int]) -> dict[str, Any]:
    """How the callers fared under the load: each dispatch's time (queueing included) and
    how unevenly the dispatches went to the callers (a pool that lets a newcomer take a
    freed worker ahead of those waiting serves a few callers and starves the rest)."""
    ordered = sorted(durations_ns)
    return {"p99_ms": percentile(ordered, 99) / 1e6, "max_ms": ordered[-1] / 1e6,
            "caller_min": min(per_caller), "caller_max": max(per_caller)}


class _Handlerbox:
    def __init__(self, config: dict[str, Any]) -> None:
        self.engine = Engine(workers=int(config["workers"]), spares=1)
        self.app = self.engine.load_app(payloads.CALL_APP)
        self.payloads = {size: payloads.payload(size) for size in payloads.SIZES}

    def describe(self) -> dict[str, Any]:
        """The isolation layers the workers run under, and the engine's own start timing."""
        return {"isolation": self.engine.isolation(),
                "engine_worker_start_ms": self.engine.worker_start_ms()}

    def check(self, result: InvocationResult) -> None:
        if result.outcome != "ok":
            raise RuntimeError(f"dispatch ended {result.outcome}: {result.error}")

    def close(self) -> None:
        self.engine.close()


class HandlerboxSync(_Handlerbox):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.threads: ThreadPoolExecutor | None = None
        for size in self.payloads:
            self.check(self.engine.dispatch(self.app, self.payloads[size]))
        self.latency(int(config.get("setup_warmup", 100)), 0)

    def latency(self, calls: int, warmup: int, size: str = "350") -> list[int]:
        engine, app, payload = self.engine, self.app, self.payloads[size]
        self.check(engine.dispatch(app, payload))
        return time_calls(lambda: engine.dispatch(app, payload), calls, warmup)

    def throughput(self, tasks: int, in_flight: int) -> dict[str, Any]:
        if self.threads is None or self.threads._max_workers != in_flight:
            self.threads = ThreadPoolExecutor(in_flight)
            list(self.threads.map(self._one, range(in_flight * 2)))  # start every thread
        start = time.perf_counter()
        done = list(self.threads.map(self._one, range(tasks)))
        seconds = time.perf_counter() - start
        outcomes = [outcome for outcome, _, _ in done]
        per_caller = Counter(thread for _, _, thread in done)
        return {"seconds": seconds, "tasks": tasks, "errors": tasks - outcomes.count("ok"),
                **waits([ns for _, ns, _ in done], list(per_caller.values()))}

    def _one(self, _: int) -> tuple[str, int, int]:
        start = time.perf_counter_ns()
        outcome = self.engine.dispatch(self.app, self.payloads["350"]).outcome
        return outcome, time.perf_counter_ns() - start, threading.get_ident()

    def close(self) -> None:
        if self.threads is not None:
            self.threads.shutdown()
        super().close()


class HandlerboxAsync(_Handlerbox):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.loop = asyncio.new_event_loop()
        for size in self.payloads:
            self.check(self.loop.run_until_complete(
                self.engine.dispatch_async(self.app, self.payloads[size])))
        self.latency(int(config.get("setup_warmup", 100)), 0)

    def latency(self, calls: int, warmup: int, size: str = "350") -> list[int]:
        return self.loop.run_until_complete(self._latency(calls, warmup, self.payloads[size]))

    async def _latency(self, calls: int, warmup: int, payload: dict[str, Any]) -> list[int]:
        engine, app, clock = self.engine, self.app, time.perf_counter_ns
        for _ in range(warmup):
            self.check(await engine.dispatch_async(app, payload))
        samples = []
        for _ in range(calls):
            start = clock()
            await engine.dispatch_async(app, payload)
            samples.append(clock() - start)
        return samples

    def throughput(self, tasks: int, in_flight: int) -> dict[str, Any]:
        return self.loop.run_until_complete(self._throughput(tasks, in_flight))

    async def _throughput(self, tasks: int, in_flight: int) -> dict[str, Any]:
        left = tasks
        outcomes: list[str] = []
        durations: list[int] = []
        per_caller = [0] * in_flight
        payload = self.payloads["350"]
        clock = time.perf_counter_ns

        async def caller(me: int) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                begun = clock()
                outcomes.append((await self.engine.dispatch_async(self.app, payload)).outcome)
                durations.append(clock() - begun)
                per_caller[me] += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(in_flight)))
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "tasks": tasks, "errors": tasks - outcomes.count("ok"),
                **waits(durations, per_caller)}

    def close(self) -> None:
        super().close()
        self.loop.close()
