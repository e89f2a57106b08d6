"""The traffic: callers on threads and on an event loop, drawing requests from one schedule,
and the gates that keep the slow requests from taking every worker.

No untrusted input. Requests come from threads (engine.dispatch) and coroutines on one event
loop thread (await engine.dispatch_async); the app of each is drawn at random from its class's
group.

Slow slots. Timeouts and kills hold a worker for 0.3 s or ~50 ms, and the engine bounds a
dispatch's wait for a worker by its app's deadline; with a 2-worker budget, unthrottled
clients would keep both workers spinning most of the time and the 0.3 s apps' own waits would
end `overloaded`. So at most --slow-slots (workers - 1) timeouts and kills are in flight at
once (a client-side semaphore): one worker always serves the normal traffic. The count mix is
unchanged, but it sets the pace: each 100 requests hold a slot for about 1 s (3 x 0.3 s of
timeouts, 2 kills of ~50 ms), so a slot carries about 90 requests/s; more workers, more slots.
(`--slow-slots 2` with 2 workers shows the alternative: some timeouts end `overloaded`, and
normal p99 goes from ~15 ms to ~300 ms.)
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from handlerbox.benchmarks.soak.classes import CLASSES, Schedule, make_payload
from handlerbox.benchmarks.soak.tally import CallerStats, record

if TYPE_CHECKING:
    from handlerbox import App, Engine, InvocationResult
    from handlerbox.benchmarks.soak.apps import Member
    from handlerbox.benchmarks.soak.injector import Injector, Ticket
    from handlerbox.benchmarks.soak.processes import Watcher

POLL_SECONDS = 0.002
"""How often a caller retries a slow slot or a victim app that is taken."""


@dataclass
class Context:
    """What every caller shares."""

    engine: Engine
    groups: dict[str, list[Member]]
    schedule: Schedule
    injector: Injector
    watcher: Watcher
    gate: threading.BoundedSemaphore
    """The slow slots."""
    victim_locks: dict[str, threading.Lock]
    """By app key: a kill is running on the victim app."""
    stop_at: float
    spin_seconds: float

    def draw(self) -> tuple[int, str] | None:
        """The next request's sequence number and class; None once the traffic is over."""
        return self.schedule.next() if time.monotonic() < self.stop_at else None

    def choose(self, kind: str, rng: random.Random) -> Member | None:
        """An app of the class's group. For a kill, a victim app no other kill is running on
        (else the injector could not tell two spinning workers of one app apart), locked;
        None while all are taken."""
        if kind != "kill":
            return rng.choice(self.groups[CLASSES[kind].group])
        victims = list(self.groups["victims"])
        rng.shuffle(victims)
        for index, app in victims:
            if self.victim_locks[app.key].acquire(blocking=False):
                return index, app
        return None

    def release(self, kind: str, app: App) -> None:
        """Free the victim app and the slow slot a request of `kind` took."""
        if kind == "kill":
            self.victim_locks[app.key].release()
        if CLASSES[kind].slow:
            self.gate.release()


class Call:
    """One dispatch, around the engine call (`with Call(...) as call: call.result = ...`):
    arms the injector for a kill and starts the clock; at the end disarms it, frees what the
    request took (Context.release) and tallies the result, or the exception the dispatch
    raised, which it swallows."""

    def __init__(self, ctx: Context, stats: CallerStats, seq: int, kind: str,
                 member: Member) -> None:
        self.ctx, self.stats, self.seq, self.kind = ctx, stats, seq, kind
        self.index, self.app = member
        self.payload = make_payload(kind, seq, self.index, ctx.spin_seconds)
        self.result: InvocationResult | None = None
        self._ticket: Ticket | None = None
        self._start = 0.0

    def __enter__(self) -> Call:
        self._ticket = self.ctx.injector.arm(self.app) if self.kind == "kill" else None
        self.stats.requests += 1
        self._start = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        killed = self.ctx.injector.disarm(self._ticket) if self._ticket is not None else None
        elapsed_ms = (time.perf_counter() - self._start) * 1000.0
        self.ctx.release(self.kind, self.app)
        if exc is not None:
            if not isinstance(exc, Exception):
                return False
            self.stats.raised.append(
                f"{self.kind} #{self.seq}: {type(exc).__name__}: {exc}"[:300])
            return True
        assert self.result is not None, "the with block sets call.result"
        self.ctx.watcher.note_pid(self.result.worker_pid)
        record(self.stats, self.kind, self.seq, self.result, killed, elapsed_ms)
        return False


def sync_caller(ctx: Context, stats: CallerStats, seed: int) -> None:
    rng = random.Random(seed)
    while (drawn := ctx.draw()) is not None:
        seq, kind = drawn
        if CLASSES[kind].slow:
            ctx.gate.acquire()
        while (member := ctx.choose(kind, rng)) is None:
            time.sleep(POLL_SECONDS)
        with Call(ctx, stats, seq, kind, member) as call:
            call.result = ctx.engine.dispatch(call.app, call.payload)


async def async_caller(ctx: Context, stats: CallerStats, seed: int) -> None:
    rng = random.Random(seed)
    while (drawn := ctx.draw()) is not None:
        seq, kind = drawn
        if CLASSES[kind].slow:
            while not ctx.gate.acquire(blocking=False):
                await asyncio.sleep(POLL_SECONDS)
        while (member := ctx.choose(kind, rng)) is None:
            await asyncio.sleep(POLL_SECONDS)
        with Call(ctx, stats, seq, kind, member) as call:
            call.result = await ctx.engine.dispatch_async(call.app, call.payload)


def start_callers(ctx: Context, threads: int, async_tasks: int,
                  seed: int) -> tuple[list[CallerStats], list[threading.Thread]]:
    """Start `threads` sync callers and a thread running `async_tasks` async ones; their
    stats (sync callers first) and threads."""
    sync_stats = [CallerStats() for _ in range(threads)]
    async_stats = [CallerStats() for _ in range(async_tasks)]
    callers = [threading.Thread(target=sync_caller, args=(ctx, s, seed * 1000 + i),
                                daemon=True, name=f"soak-caller-{i}")
               for i, s in enumerate(sync_stats)]
    if async_tasks:
        callers.append(threading.Thread(target=_async_thread,
                                        args=(ctx, async_stats, seed * 1000 + 500),
                                        daemon=True, name="soak-async"))
    for thread in callers:
        thread.start()
    return [*sync_stats, *async_stats], callers


def _async_thread(ctx: Context, stats: list[CallerStats], seed: int) -> None:
    async def main() -> None:
        await asyncio.gather(*(async_caller(ctx, s, seed + i) for i, s in enumerate(stats)))

    asyncio.run(main())
