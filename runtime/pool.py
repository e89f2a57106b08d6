"""Worker bookkeeping: a global budget of app-bound workers, ready spares, waiting callers.

No untrusted input here. A worker serves one app for its life. `acquire` hands out, in this
order: an idle worker of the same app (most recently used first), a spare bound on the spot
while the budget allows, or a spare that replaces the least recently used idle worker of
another app (idle apps give their workers back). Otherwise the caller waits in a bounded
queue, woken when a worker is released. A keeper thread starts spares in the background, so
a worker lost to a timeout or crash is replaced without the next caller waiting for a start.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from handlerbox.runtime.errors import Overloaded
from handlerbox.runtime.spawner import Spawner, WorkerProcess


@dataclass
class Lease:
    """A worker handed to one caller; `fresh` means it must be bound to the app first."""

    worker: WorkerProcess
    fresh: bool


class _Waiter:
    """A caller waiting for a worker: an async callback, or a threading.Event made (under the
    pool's lock) only once the caller really has to wait."""

    def __init__(self, app_key: str, wake: Callable[[], None] | None = None) -> None:
        self.app_key = app_key
        self.callback = wake
        self.event: threading.Event | None = None

    def wake(self) -> None:
        if self.callback is not None:
            self.callback()
        else:
            self.event.set()  # type: ignore[union-attr]


class Pool:
    """Thread-safe; the async acquire waits on a future instead of a thread."""

    def __init__(self, spawner: Spawner, budget: int, spares: int, recycle_after: int,
                 max_queue: int, max_queue_per_app: int | None = None,
                 recycle_cpu_ms: float = float("inf"),
                 recycle_rss_kb: int = 1 << 62) -> None:
        self.spawner = spawner
        self.budget = budget
        self.spare_target = spares
        self.recycle_after = recycle_after
        self.recycle_cpu_ms = recycle_cpu_ms
        self.recycle_rss_kb = recycle_rss_kb
        self.max_queue = max_queue
        self.max_queue_per_app = max_queue if max_queue_per_app is None else max_queue_per_app
        self._lock = threading.Lock()
        self._spares_wanted = threading.Condition(self._lock)
        self._idle: dict[str, list[WorkerProcess]] = {}
        self._lru: OrderedDict[WorkerProcess, None] = OrderedDict()
        self._busy: set[WorkerProcess] = set()
        self._bound = 0
        self._spares: list[WorkerProcess] = []
        self._waiters: deque[_Waiter] = deque()
        self._waiting: Counter[str] = Counter()  # per app, for its own bound
        self._closed = False
        self._retired: set[str] = set()  # key prefixes of apps replaced or unloaded
        self._keeper = threading.Thread(target=self._keep_spares, daemon=True,
                                         name="handlerbox-spares")
        self._keeper.start()

    # -- acquire / release -----------------------------------------------------------------

    def acquire(self, app_key: str, wait_seconds: float) -> Lease:
        """A worker for `app_key`; raises Overloaded when none comes free in time."""
        deadline = time.monotonic() + wait_seconds
        while True:
            waiter = _Waiter(app_key)
            lease = self._try_acquire(app_key, waiter)
            if lease is not None:
                return lease
            assert waiter.event is not None
            if not waiter.event.wait(max(deadline - time.monotonic(), 0.0)):
                self._give_up(waiter)
                raise Overloaded(_waited_too_long(wait_seconds))

    async def acquire_async(self, app_key: str, wait_seconds: float) -> Lease:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            woken = loop.create_future()

            def wake(woken: asyncio.Future[None] = woken) -> None:
                loop.call_soon_threadsafe(_set_once, woken)

            waiter = _Waiter(app_key, wake)
            lease = self._try_acquire(app_key, waiter)
            if lease is not None:
                return lease
            try:
                await asyncio.wait_for(woken, max(deadline - loop.time(), 0.0))
            except TimeoutError:
                self._give_up(waiter)
                raise Overloaded(_waited_too_long(wait_seconds)) from None
            except asyncio.CancelledError:
                # Leave the queue; a wake-up that already reached us goes to the next waiter.
                self._give_up(waiter)
                raise

    def release(self, worker: WorkerProcess, healthy: bool, cpu_ms: float = 0.0,
                rss_kb: int = 0) -> None:
        """Give a worker back after a dispatch. An unhealthy one is killed; so is one worn
        out by invocations, CPU time (its CPU rlimit accumulates) or memory growth, between
        invocations, so no dispatch fails for it."""
        worker.invocations += 1
        worker.cpu_ms += cpu_ms
        keep = (healthy and worker.invocations < self.recycle_after
                and not any((worker.app_key or "").startswith(p) for p in self._retired)
                and worker.cpu_ms < self.recycle_cpu_ms and rss_kb < self.recycle_rss_kb)
        with self._lock:
            self._busy.discard(worker)
            if keep and not self._closed and worker.app_key is not None:
                self._idle.setdefault(worker.app_key, []).append(worker)
                self._lru[worker] = None
            else:
                self._bound -= 1
            self._wake_one()
        if not keep or self._closed:
            worker.kill()

    def retire(self, key_prefix: str) -> int:
        """Kill the idle workers whose key starts with `key_prefix` (an app version that was
        replaced or unloaded); busy ones finish their dispatch and are not kept."""
        with self._lock:
            self._retired.add(key_prefix)
            gone = [w for w in self._lru if (w.app_key or "").startswith(key_prefix)]
            for worker in gone:
                del self._lru[worker]
                self._idle[worker.app_key or ""].remove(worker)
                self._bound -= 1
            for _ in gone:
                self._wake_one()
        for worker in gone:
            worker.kill()
        return len(gone)

    def close(self) -> None:
        """Kill every worker; callers still waiting are told the pool is overloaded. Busy
        workers are only signalled: their callers see EOF, then release (and close) them."""
        with self._lock:
            self._closed = True
            unused = [*self._lru, *self._spares]
            busy = list(self._busy)
            self._idle.clear()
            self._lru.clear()
            self._spares.clear()
            while self._waiters:
                self._wake_one()
            self._spares_wanted.notify_all()
        for worker in unused:
            worker.kill()
        for worker in busy:
            worker.stop()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"bound": self._bound, "idle": len(self._lru), "busy": len(self._busy),
                    "spares": len(self._spares), "waiting": len(self._waiters)}

    def states(self) -> list[tuple[WorkerProcess, str]]:
        """Every worker with its state: "idle", "busy" or "spare"."""
        with self._lock:
            return ([(w, "idle") for w in self._lru] + [(w, "busy") for w in self._busy]
                    + [(w, "spare") for w in self._spares])

    def workers(self) -> list[WorkerProcess]:
        with self._lock:
            return [*self._lru, *self._busy, *self._spares]

    # -- internals -------------------------------------------------------------------------

    def _try_acquire(self, app_key: str, waiter: _Waiter) -> Lease | None:
        dead: list[WorkerProcess] = []
        try:
            return self._try_acquire_locked(app_key, waiter, dead)
        finally:
            for worker in dead:
                worker.kill()

    def _try_acquire_locked(self, app_key: str, waiter: _Waiter,
                            dead: list[WorkerProcess]) -> Lease | None:
        victim = None
        with self._lock:
            if self._closed:
                raise Overloaded("the engine is closing")
            idle = self._idle.get(app_key)
            while idle:
                worker = idle.pop()
                del self._lru[worker]
                if worker.exit_status.done():  # died while idle: never hand it out
                    self._bound -= 1
                    dead.append(worker)
                    continue
                self._busy.add(worker)
                return Lease(worker, fresh=False)
            if self._bound >= self.budget:
                if not self._lru:
                    if len(self._waiters) >= self.max_queue:
                        raise Overloaded(f"the wait queue is full ({self.max_queue} dispatches "
                                         "waiting for a worker; config.max_queue)")
                    if self._waiting[app_key] >= self.max_queue_per_app:
                        raise Overloaded(f"this installation's wait queue is full "
                                         f"({self.max_queue_per_app} dispatches waiting; "
                                         "config.max_queue_per_app)")
                    if waiter.callback is None:
                        waiter.event = threading.Event()
                    self._waiters.append(waiter)
                    self._waiting[app_key] += 1
                    return None
                victim, _ = self._lru.popitem(last=False)
                self._idle[victim.app_key or ""].remove(victim)
            else:
                self._bound += 1
            spare = None
            while self._spares and spare is None:
                spare = self._spares.pop()
                if spare.exit_status.done():
                    dead.append(spare)
                    spare = None
            self._spares_wanted.notify()
        if victim is not None:
            victim.kill()
        try:
            worker = spare or self.spawner.spawn()
        except BaseException:
            with self._lock:
                self._bound -= 1
                self._wake_one()
            raise
        worker.app_key = app_key
        with self._lock:
            self._busy.add(worker)
        return Lease(worker, fresh=True)

    def _wake_one(self) -> None:
        if self._waiters:
            waiter = self._waiters.popleft()
            self._forget(waiter)
            waiter.wake()

    def _forget(self, waiter: _Waiter) -> None:
        self._waiting[waiter.app_key] -= 1
        if not self._waiting[waiter.app_key]:
            del self._waiting[waiter.app_key]

    def _give_up(self, waiter: _Waiter) -> None:
        """A waiter timed out. If it was woken meanwhile, pass the wake-up on, so a free
        worker is never left unclaimed while others wait."""
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                self._wake_one()
            else:
                self._forget(waiter)

    def _keep_spares(self) -> None:
        while True:
            with self._lock:
                while not self._closed and len(self._spares) >= self.spare_target:
                    self._spares_wanted.wait()
                if self._closed:
                    return
            try:
                spare = self.spawner.spawn()
            except Exception:
                with self._lock:
                    self._spares_wanted.wait(0.5)
                continue
            with self._lock:
                if self._closed:
                    spare.kill()
                    return
                self._spares.append(spare)


def _waited_too_long(seconds: float) -> str:
    return (f"no worker came free within {seconds:g} s (a dispatch waits for a worker for at "
            "most its execution timeout)")


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
