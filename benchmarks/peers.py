"""The peer pools a platform engineer would otherwise use, each running benchmarks.work.handle.

No untrusted input. Each peer gets the payload dict and returns the handler's dict (pickled
both ways), with N workers, the default start method (fork on Linux), and its own idiom for
one call:

    mp_pool      multiprocessing.Pool(N).apply(handle, (payload,))          no timeouts
    executor     ProcessPoolExecutor(N).submit(handle, payload).result()    no timeouts
    pebble       pebble.ProcessPool(N).schedule(handle, [payload], timeout=T).result()

Ops: latency(calls, warmup, size) and throughput(tasks, in_flight).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from handlerbox.benchmarks import payloads, work
from handlerbox.benchmarks.stats import time_calls, windowed

TASK_TIMEOUT = 20.0
"""pebble's per-task timeout: the execution timeout handlerbox applies by default."""


class _Peer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.workers = int(config["workers"])
        self.payloads = {size: payloads.payload(size) for size in payloads.SIZES}
        self.expected = work.handle(self.payloads["350"])

    def call(self, payload: dict[str, Any]) -> Any:
        raise NotImplementedError

    def submit(self, payload: dict[str, Any], done: Callable[[Any], None]) -> None:
        raise NotImplementedError

    def warm(self, calls: int) -> None:
        assert self.call(self.payloads["350"]) == self.expected
        self.throughput(max(calls, 4 * self.workers), 2 * self.workers)

    def latency(self, calls: int, warmup: int, size: str = "350") -> list[int]:
        payload = self.payloads[size]
        return time_calls(lambda: self.call(payload), calls, warmup)

    def throughput(self, tasks: int, in_flight: int) -> dict[str, Any]:
        payload = self.payloads["350"]
        return windowed(lambda done: self.submit(payload, done), tasks, in_flight)


def _on_future(done: Callable[[Any], None]) -> Callable[[Future[Any]], None]:
    return lambda future: done(future.exception())


class MultiprocessingPool(_Peer):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.pool = multiprocessing.Pool(self.workers)
        self.warm(int(config.get("setup_warmup", 100)))

    def call(self, payload: dict[str, Any]) -> Any:
        return self.pool.apply(work.handle, (payload,))

    def submit(self, payload: dict[str, Any], done: Callable[[Any], None]) -> None:
        self.pool.apply_async(work.handle, (payload,), callback=lambda _: done(None),
                              error_callback=done)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


class Executor(_Peer):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.pool = ProcessPoolExecutor(self.workers)
        self.warm(int(config.get("setup_warmup", 100)))

    def call(self, payload: dict[str, Any]) -> Any:
        return self.pool.submit(work.handle, payload).result()

    def submit(self, payload: dict[str, Any], done: Callable[[Any], None]) -> None:
        self.pool.submit(work.handle, payload).add_done_callback(_on_future(done))

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class Pebble(_Peer):
    def __init__(self, config: dict[str, Any]) -> None:
        import pebble

        super().__init__(config)
        self.pool = pebble.ProcessPool(max_workers=self.workers)
        self.warm(int(config.get("setup_warmup", 100)))

    def call(self, payload: dict[str, Any]) -> Any:
        return self.pool.schedule(work.handle, [payload], timeout=TASK_TIMEOUT).result()

    def submit(self, payload: dict[str, Any], done: Callable[[Any], None]) -> None:
        future = self.pool.schedule(work.handle, [payload], timeout=TASK_TIMEOUT)
        future.add_done_callback(_on_future(done))

    def close(self) -> None:
        self.pool.stop()  # type: ignore[no-untyped-call]
        self.pool.join()
