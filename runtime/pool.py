"""Worker bookkeeping: fair slots for running dispatches, warm workers within a memory cap, ready
spares, waiting callers, and a keeper thread for everything off the request path.

No untrusted input here. A worker serves one installation (pool key "<app key>/<account id>")
for its life. The budget counts dispatches *running*, not processes: an idle warm worker
blocks nobody. `acquire` first takes a slot (runtime.fairness: the budget, caps per app and per
installation, waiters served fairly across apps), then a worker for it, in this order: an idle
worker of the installation (most recently used first), a ready spare (bound on the spot), or a
new fork. Idle workers stay warm up to a memory cap (runtime.density), the least recently used
evicted beyond it. After a timeout the dispatcher hands over the installation's bind request
with the dead worker, and a spare is bound to it at once: the installation's next dispatch
finds a worker that only has to run.

The keeper thread starts spares when the pool is quiet (a fork is about 3 ms of CPU: not on a
dispatch's critical path), measures idle workers' memory and evicts beyond the cap, evicts idle
workers that burn CPU, and demotes handlers that run long (runtime.fairness.demote).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlerbox.runtime import density, fairness, protocol
from handlerbox.runtime.errors import Overloaded
from handlerbox.runtime.fairness import Admission, Waiter
from handlerbox.runtime.spawner import Spawner, WorkerProcess

SPARE_QUIET_SECONDS = 0.002
"""The keeper starts a spare once no dispatch has started for this long and none runs..."""
SPARE_DELAY_SECONDS = 0.1
"""...or once a spare has been missing this long, whichever comes first."""
MEASURE_SETTLE_SECONDS = 0.2
"""A worker is measured this long after it went idle (it has prepared its next call by then),
once the pool is quiet (a measurement is ~1 ms of the host's CPU: never beside a dispatch)..."""
MEASURE_MAX_DELAY_SECONDS = 10.0
"""...or, when it never is, this long after it was asked for, one worker every
MEASURE_PACE_SECONDS."""
MEASURE_PACE_SECONDS = 0.05
IDLE_SWEEP_SECONDS = 2.0
"""How often idle workers' CPU time is checked (runtime.density.IDLE_CPU_SECONDS)."""
DEMOTE_TICK_SECONDS = fairness.DEMOTE_AFTER_SECONDS / 2
"""How often the keeper looks for long-running handlers while dispatches run."""


@dataclass
class Lease:
    """A worker handed to one caller with a slot. `fresh`: it has not served yet, so its ready
    reply comes first; `bind_sent`: the pool already sent its bind request (after a timeout)."""

    worker: WorkerProcess
    fresh: bool
    bind_sent: bool = False


class Pool:
    """Thread-safe; the async acquire waits on a future instead of a thread."""

    def __init__(self, spawner: Spawner, budget: int, spares: int, recycle_after: int,
                 max_queue: int, max_queue_per_app: int | None = None,
                 recycle_cpu_ms: float = float("inf"), recycle_rss_kb: int = 1 << 62, *,
                 max_per_app: int | None = None, max_per_installation: int | None = None,
                 idle_memory_mb: int = 512) -> None:
        self.spawner = spawner
        self.spare_target = spares
        self.recycle_after = recycle_after
        self.recycle_cpu_ms = recycle_cpu_ms
        self.recycle_rss_kb = recycle_rss_kb
        self.admission = Admission(budget, max_per_app, max_per_installation, max_queue,
                                   max_queue_per_app)
        self.warm = density.WarmSet(idle_memory_mb << 20, density.max_idle_workers())
        self._lock = threading.Lock()
        self._keeper_wake = threading.Condition(self._lock)
        self._busy: dict[WorkerProcess, float] = {}  # -> when its dispatch took it
        self._demoted: set[WorkerProcess] = set()
        self._spares: list[WorkerProcess] = []
        self._prebound: set[WorkerProcess] = set()
        self._retired: tuple[str, ...] = ()  # key prefixes of apps replaced or uninstalled
        self._closed = False
        self._last_start = 0.0
        self._spawning = 0  # dispatches waiting for a fork: the pool is not quiet
        self._spare_missing_since: float | None = None
        self._measure_at: float | None = None  # measure due workers from then on...
        self._measure_by = 0.0  # ...when the pool is quiet, or from this time on regardless
        self._keeper_dozing = False  # asleep until notified: the next dispatch wakes it
        self._keeper = threading.Thread(target=self._keep, daemon=True, name="handlerbox-pool")
        self._keeper.start()

    @classmethod
    def from_config(cls, spawner: Spawner, config: Any, spares: int) -> Pool:
        """A pool with an EngineConfig's settings."""
        return cls(spawner, budget=config.workers, spares=spares,
                   recycle_after=config.recycle_after, max_queue=config.max_queue,
                   max_queue_per_app=config.max_queue_per_app,
                   # half the CPU rlimit: a worker is replaced long before it bites
                   recycle_cpu_ms=config.worker_cpu_seconds * 500.0,
                   recycle_rss_kb=config.recycle_rss_mb << 10,
                   max_per_app=config.max_concurrency_per_app,
                   max_per_installation=config.max_concurrency_per_installation,
                   idle_memory_mb=config.idle_memory_mb)

    def configure(self, *, max_per_app: int | None = None,
                  max_per_installation: int | None = None,
                  idle_memory_mb: int | None = None) -> None:
        """Change the caps of a running pool (None: the budget; the memory cap unchanged)."""
        with self._lock:
            admission = self.admission
            admission.per_app = admission.budget if max_per_app is None else max_per_app
            admission.per_installation = (admission.budget if max_per_installation is None
                                          else max_per_installation)
            granted = admission.grant()
            if idle_memory_mb is not None:
                self.warm.cap = idle_memory_mb << 20
            evicted = self._evict_locked()
        _wake(granted)
        _kill(evicted)

    @property
    def budget(self) -> int:
        return self.admission.budget

    # -- acquire / release -----------------------------------------------------------------

    def acquire(self, app_key: str, wait_seconds: float) -> Lease:
        """A slot and a worker for installation `app_key`; raises Overloaded when no slot
        comes free in time, or the wait queue is full."""
        waiter = None
        with self._lock:
            if self._closed:
                raise Overloaded("the engine is closing")
            if self.admission.admit(app_key):
                lease = self._warm_lease_locked(app_key)
                if lease is not None:
                    return lease
            else:
                waiter = Waiter(app_key)
                waiter.event = threading.Event()
                self.admission.enqueue(waiter)
        if waiter is not None:
            woken = waiter.event.wait(wait_seconds)  # type: ignore[union-attr]
            self._after_wait(waiter, None if woken else _waited_too_long(wait_seconds))
        return self._lease(app_key)

    async def acquire_async(self, app_key: str, wait_seconds: float) -> Lease:
        waiter = None
        with self._lock:
            if self._closed:
                raise Overloaded("the engine is closing")
            if self.admission.admit(app_key):
                lease = self._warm_lease_locked(app_key)
                if lease is not None:
                    return lease
            else:
                loop = asyncio.get_running_loop()
                woken: asyncio.Future[None] = loop.create_future()
                waiter = Waiter(app_key, _waker(loop, woken))
                self.admission.enqueue(waiter)
        if waiter is not None:
            # A timer on the future itself: asyncio.wait_for costs a second future and a
            # callback chain per waiter, and most dispatches wait under a full load.
            timer = loop.call_later(wait_seconds, _time_out, woken)
            try:
                await woken
            except TimeoutError:
                self._after_wait(waiter, _waited_too_long(wait_seconds))
            except asyncio.CancelledError:
                # Leave the queue; a slot already granted goes on to the next waiter.
                self._give_up(waiter)
                raise
            else:
                self._after_wait(waiter, None)
            finally:
                timer.cancel()
        return self._lease(app_key)

    def release(self, worker: WorkerProcess, healthy: bool, cpu_ms: float = 0.0,
                rss_kb: int = 0, rebind: bytes | None = None) -> None:
        """Give a worker and its slot back after a dispatch. An unhealthy worker is killed;
        so is one worn out by invocations, CPU time (its CPU rlimit accumulates) or memory
        growth, between invocations, so no dispatch fails for it. `rebind`, with an unhealthy
        worker: the bind request of its installation, for a spare to take its place now."""
        worker.invocations += 1
        worker.cpu_ms += cpu_ms
        key = worker.app_key or ""
        retired = bool(self._retired) and key.startswith(self._retired)
        keep = (healthy and worker.invocations < self.recycle_after and not retired
                and worker.cpu_ms < self.recycle_cpu_ms and rss_kb < self.recycle_rss_kb)
        evicted: list[WorkerProcess] = []
        spare = None
        with self._lock:
            started = self._busy.pop(worker, None)
            if self._demoted and worker in self._demoted:
                # Sticky: a worker whose last dispatch ran long stays demoted (its app's next
                # one is likely long too, and would run undemoted for a tick); one that ran a
                # short dispatch meanwhile is restored, or not kept at nice 19.
                ran_long = (started is not None and time.monotonic() - started
                            >= fairness.DEMOTE_AFTER_SECONDS)
                if not (keep and ran_long):
                    self._demoted.discard(worker)
                    keep = keep and fairness.restore(worker.pid)
            granted = self.admission.free(key)
            if keep and not self._closed:
                if self.warm.put(worker, key):
                    evicted = self._evict_locked()
                if worker.invocations == 1 or worker.invocations % density.MEASURE_EVERY == 0:
                    self._measure_soon_locked()  # the keeper measures those due (density.due)
            else:
                keep = False
                self.warm.forget(worker)
                if rebind is not None and not self._closed and not retired:
                    spare = self._pop_spare_locked()
        if granted:
            _wake(granted)
        if not keep:
            worker.kill()
        if evicted:
            _kill(evicted)
        if spare is not None and rebind is not None:
            self._prebind(spare, key, rebind)

    def retire(self, key_prefix: str) -> int:
        """Kill the idle workers whose key starts with `key_prefix` (an app version that was
        replaced or unloaded: `<app key>/`); busy ones finish their dispatch and are not
        kept, and no worker is bound to that prefix again."""
        with self._lock:
            self._retired = (*self._retired, key_prefix)
            gone = self.warm.matching(key_prefix)
            self._forget_locked(gone)
        _kill(gone)
        return len(gone)

    def drop(self, key: str) -> int:
        """Kill the idle workers of exactly `key` (an installation removed); unlike retire,
        the key may be bound again (the account may install the app anew)."""
        with self._lock:
            # Exactly `key`: matching() takes prefixes, and "app/82918" is a prefix of
            # "app/829180", whose idle workers it would take out of the set and leave running.
            gone = self.warm.of(key)
            self._forget_locked(gone)
        _kill(gone)
        return len(gone)

    def close(self) -> None:
        """Kill every worker; callers still waiting are told the engine is closing. Busy
        workers are only signalled: their callers see EOF, then release (and close) them."""
        with self._lock:
            self._closed = True
            unused = [*self.warm.clear(), *self._spares]
            self._spares.clear()
            self._prebound.clear()
            busy = list(self._busy)
            waiting = self.admission.drain()
            self._keeper_wake.notify_all()
        _wake(waiting)
        _kill(unused)
        for worker in busy:
            worker.stop()

    def stats(self) -> dict[str, int]:
        """`bound`: slots in use (running dispatches, counted against the budget); `idle`
        warm workers and `idle_mb` their memory; `busy`, `spares`, `waiting`."""
        with self._lock:
            return {"bound": self.admission.running, "idle": len(self.warm),
                    "busy": len(self._busy), "spares": len(self._spares),
                    "waiting": self.admission.waiting,
                    "idle_mb": self.warm.idle_bytes >> 20}

    def states(self) -> list[tuple[WorkerProcess, str]]:
        """Every worker with its state: "idle", "busy" or "spare"."""
        with self._lock:
            return ([(w, "idle") for w in self.warm] + [(w, "busy") for w in self._busy]
                    + [(w, "spare") for w in self._spares])

    def workers(self) -> list[WorkerProcess]:
        with self._lock:
            return [*self.warm, *self._busy, *self._spares]

    # -- internals -------------------------------------------------------------------------

    def _after_wait(self, waiter: Waiter, timed_out: str | None) -> None:
        """After a wait: keep a granted slot, or give up (passing a late grant on)."""
        if timed_out is None and waiter.granted:
            return
        self._give_up(waiter)
        if self._closed:
            raise Overloaded("the engine is closing")
        raise Overloaded(timed_out or "the engine is closing")

    def _give_up(self, waiter: Waiter) -> None:
        """A waiter stops waiting. If a slot was granted to it meanwhile, the slot goes on to
        the next waiter, so a free slot is never left unclaimed while others wait."""
        with self._lock:
            granted = []
            if not self.admission.withdraw(waiter) and waiter.granted:
                waiter.granted = False
                granted = self.admission.free(waiter.key)
        _wake(granted)

    def _warm_lease_locked(self, key: str) -> Lease | None:
        """The slot's worker when the installation has a live idle one (the fast path)."""
        worker = self.warm.take(key)
        if worker is None or worker.exit_status.done():  # died while idle: the slow path
            if worker is not None:
                self.warm.put(worker, key)  # _lease takes it out and kills it
            return None
        return self._hand_out_locked(worker)

    def _hand_out_locked(self, worker: WorkerProcess) -> Lease:
        self._last_start = now = time.monotonic()
        self._busy[worker] = now
        if self._keeper_dozing:
            self._keeper_dozing = False
            self._keeper_wake.notify()
        if self._prebound and worker in self._prebound:
            self._prebound.discard(worker)
            return Lease(worker, fresh=True, bind_sent=True)
        return Lease(worker, fresh=worker.invocations == 0)

    def _lease(self, key: str) -> Lease:
        """A worker for a slot already taken: warm, else a spare, else a new fork."""
        dead: list[WorkerProcess] = []
        try:
            with self._lock:
                while (worker := self.warm.take(key)) is not None:
                    if not worker.exit_status.done():
                        return self._hand_out_locked(worker)
                    dead.append(worker)  # died while idle: never hand it out
                self._forget_locked(dead)
                spare = self._pop_spare_locked()
                # A new installation's worker: make room among the idle ones now.
                evicted = self.warm.over_cap(adding=1)
                self._forget_locked(evicted)
        finally:
            _kill(dead)
        _kill(evicted)
        if spare is None:
            with self._lock:
                self._spawning += 1
            try:
                spare = self.spawner.spawn()
            except BaseException:
                with self._lock:
                    self._spawning -= 1
                    granted = self.admission.free(key)
                _wake(granted)
                raise
            with self._lock:
                self._spawning -= 1
        spare.app_key = key
        with self._lock:
            return self._hand_out_locked(spare)

    def _pop_spare_locked(self) -> WorkerProcess | None:
        """A live spare, if any; the keeper is told to replace it."""
        spare = None
        while self._spares and spare is None:
            spare = self._spares.pop()
            if spare.exit_status.done():
                spare.kill()  # its fds only: the process is gone
                spare = None
        self._keeper_wake.notify()
        return spare

    def _prebind(self, spare: WorkerProcess, key: str, bind: bytes) -> None:
        """Bind a spare to `key` now and keep it warm: the installation's next dispatch sends
        only its request (the ready reply comes first, as from any fresh worker)."""
        try:
            protocol.write_frame(spare.request_fd, bind)
        except OSError:  # the spare died
            spare.kill()
            return
        spare.app_key = key
        with self._lock:
            if not self._closed:
                self._prebound.add(spare)
                self.warm.put(spare, key)
                return
        spare.kill()

    def _evict_locked(self) -> list[WorkerProcess]:
        evicted = self.warm.over_cap()
        self._forget_locked(evicted)
        return evicted

    def _forget_locked(self, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            self._prebound.discard(worker)
            self.warm.forget(worker)

    def _measure_soon_locked(self) -> None:
        if self._measure_at is None:
            self._measure_at = time.monotonic() + MEASURE_SETTLE_SECONDS
            self._measure_by = self._measure_at + MEASURE_MAX_DELAY_SECONDS
            self._keeper_wake.notify()

    def _quiet(self, now: float) -> bool:
        """No dispatch runs or waits for a fork, and none started for SPARE_QUIET_SECONDS."""
        return (not self._busy and not self._spawning
                and now - self._last_start >= SPARE_QUIET_SECONDS)

    # -- the keeper ------------------------------------------------------------------------

    def _keep(self) -> None:
        next_sweep = time.monotonic() + IDLE_SWEEP_SECONDS
        next_demote = 0.0
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    now = time.monotonic()
                    waits = [next_sweep - now]
                    spare = len(self._spares) < self.spare_target
                    if spare:
                        waits.append(self._spare_wait(now))
                    else:
                        self._spare_missing_since = None
                    if self._measure_at is not None:
                        waits.append(self._measure_wait(now))
                    # Nothing ran for a tick: nothing to demote; doze until a dispatch starts
                    # (it notifies). Else tick: a notify per dispatch would cost a GIL hand-off.
                    dozing = not self._busy and now - self._last_start >= DEMOTE_TICK_SECONDS
                    if not dozing:
                        waits.append(next_demote - now)
                    wait = min(waits)
                    if wait <= 0:
                        break
                    self._keeper_dozing = dozing
                    self._keeper_wake.wait(wait)
                    self._keeper_dozing = False
                measure = self._measure_at is not None and self._measure_wait(now) <= 0
                if self._busy and now >= next_demote:
                    next_demote = now + DEMOTE_TICK_SECONDS
                    self._demote_locked(now)
                elif now >= next_demote:
                    next_demote = now + DEMOTE_TICK_SECONDS
                spare = spare and self._spare_wait(now) <= 0
            if spare:
                self._start_spare()
            if measure:
                self._measure_one()
            if now >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + IDLE_SWEEP_SECONDS

    def _spare_wait(self, now: float) -> float:
        """Seconds until the keeper should start a spare: none when the pool is quiet, else
        at most SPARE_DELAY_SECONDS after the spare went missing."""
        if self._spare_missing_since is None:
            self._spare_missing_since = now
        if self._quiet(now):
            return 0.0
        return min(SPARE_QUIET_SECONDS, self._spare_missing_since + SPARE_DELAY_SECONDS - now)

    def _measure_wait(self, now: float) -> float:
        """Seconds until the keeper should measure the next due worker."""
        assert self._measure_at is not None
        if now < self._measure_at:
            return self._measure_at - now
        if self._quiet(now) or now >= self._measure_by:
            return 0.0
        return min(MEASURE_PACE_SECONDS, self._measure_by - now)

    def _start_spare(self) -> None:
        try:
            spare = self.spawner.spawn()
        except Exception:
            with self._lock:
                self._keeper_wake.wait(0.5)
            return
        with self._lock:
            self._spare_missing_since = None
            if not self._closed:
                self._spares.append(spare)
                return
        spare.kill()

    def _demote_locked(self, now: float) -> None:
        """Demote the handlers running longer than fairness.DEMOTE_AFTER_SECONDS (under the
        lock, so a worker released meanwhile is never left demoted; a few syscalls each)."""
        for worker, started in self._busy.items():
            if (now - started >= fairness.DEMOTE_AFTER_SECONDS
                    and worker not in self._demoted and fairness.demote(worker.pid)):
                self._demoted.add(worker)

    def _measure_one(self) -> None:
        """Measure one idle worker due for it (outside the lock: about 1 ms), then evict over
        the cap, and it if it burns CPU between invocations; the next one is measured on the
        keeper's next turn (when the pool is quiet again, or MEASURE_PACE_SECONDS later)."""
        with self._lock:
            due = self.warm.due()
            now = time.monotonic()
            self._measure_at = (None if len(due) <= 1 else
                                now + (0.0 if self._quiet(now) else MEASURE_PACE_SECONDS))
        measured = density.measure(due[0]) if due else None
        burning = []
        with self._lock:
            if measured is not None:
                worker = due[0]
                self.warm.record(worker, measured)
                if self.warm.burning(worker, measured) and self.warm.remove(worker):
                    self._forget_locked([worker])
                    burning.append(worker)
            evicted = self._evict_locked()
        _kill(burning + evicted)

    def _sweep(self) -> None:
        """Evict idle workers that burn CPU between invocations (a module body still running
        long after the reply): a cheap read of /proc per idle worker."""
        with self._lock:
            idle = list(self.warm)
        burning = []
        for worker in idle:
            cpu = density.cpu_seconds(worker.pid)
            if cpu is None or cpu - worker.cpu_ms / 1000.0 <= density.IDLE_CPU_SECONDS:
                continue
            with self._lock:
                if self.warm.remove(worker):
                    self._forget_locked([worker])
                    burning.append(worker)
        _kill(burning)


def _waker(loop: asyncio.AbstractEventLoop, woken: asyncio.Future[None]
           ) -> Callable[[], None]:
    """Wake an async waiter: directly on its loop's own thread (no self-pipe write), else
    through call_soon_threadsafe."""
    thread = threading.get_ident()

    def wake() -> None:
        if threading.get_ident() == thread:
            _set_once(woken)
        else:
            loop.call_soon_threadsafe(_set_once, woken)

    return wake


def _wake(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        waiter.wake()


def _kill(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        worker.kill()


def _waited_too_long(seconds: float) -> str:
    return (f"no worker came free within {seconds:g} s (a dispatch waits for a worker for at "
            "most its execution timeout)")


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _time_out(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())
