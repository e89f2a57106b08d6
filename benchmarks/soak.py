"""Soak: T seconds of mixed traffic with faults over many apps, then the engine's invariants.

    python -m benchmarks.soak --seconds T [--apps 20] [--workers 2] [--threads 8] [--quick]
                              [--json] [--async-tasks 2] [--max-requests N] [--seed 0] ...

No untrusted input (the apps are our own fixtures). The apps are copies of tests/apps/soak_app
and tests/apps/soak_forever in a temporary directory, each loaded separately (its own key, so
its own workers), in three groups:

    regular   soak_app copies, default deadline: normal (90%), handler errors (3%),
              memory bombs (2%: "a" * 10**10 against the worker's RLIMIT_AS)
    forever   soak_forever copies loaded with a short override (--timeout, 0.3 s): timeouts (3%)
    victims   soak_app copies that get only the spinning handler: the 2% killed from outside

Requests come from --threads threads (engine.dispatch) and --async-tasks coroutines on one
event loop thread (await engine.dispatch_async). Classes are drawn from shuffled blocks of 100
(90/3/3/2/2), so every full block holds the mix exactly; the app is drawn at random from the
class's group. Every payload carries a sequence number that the handlers echo, so a caller that
got another caller's result is caught.

Killing from outside (the 2%). The caller arms the injector thread with the victim app, then
dispatches its spinning handler (which spins for --spin-seconds, 3 s, far longer than it takes
to be killed). The injector polls engine.workers() for a worker bound to that app; victim apps
get no other traffic, so that worker is ours. It then waits until the worker has used
--kill-cpu-ms (30 ms) of CPU since it was first seen: binding a worker costs about a
millisecond, so only the handler burns that much, which proves the handler is running (a
worker killed before its handler starts is retried on another one by design, and would end
`ok`). Then it SIGKILLs that pid (psutil, which refuses a reused pid). The dispatch must end
`crashed` with SIGKILL named and `worker_pid` equal to the pid killed. `disarm` and the kill
share a lock, so no kill lands once the caller has its result. A kill can still miss (the
handler finishes before the injector sees it spin: it would need 3 s of delay) or land after
the worker wrote its reply; such a dispatch ends `ok`, and is counted as slack, not success.

Slow slots. Timeouts and kills hold a worker for 0.3 s or ~50 ms, and the engine bounds a
dispatch's wait for a worker by its app's deadline; with a 2-worker budget, unthrottled
clients would keep both workers spinning most of the time and the 0.3 s apps' own waits would
end `overloaded`. So at most --slow-slots (workers - 1) timeouts and kills are in flight at
once (a client-side semaphore): one worker always serves the normal traffic. The count mix is
unchanged, but it sets the pace: each 100 requests hold a slot for about 1 s (3 x 0.3 s of
timeouts, 2 kills of ~50 ms), so a slot carries about 90 requests/s; more workers, more slots.
(`--slow-slots 2` with 2 workers shows the alternative: some timeouts end `overloaded`, and
normal p99 goes from ~15 ms to ~300 ms.)

Memory. The soak's own bookkeeping stays small whatever T (per-caller counters, an array of
normal latencies, a pid bitmap, the live process set), so host RSS growth is the engine's.

Then it checks, and exits 1 if a check fails:

    one_result_each   results == requests: no dispatch raised, none hung
    outcomes          each class ends in its outcome (normal ok, errors handler_error, timeouts
                      timeout, bombs memory_limit, kills crashed), values echo their own request;
                      slack only for the races above (kills ending ok, timeouts overloaded)
    mix               outcome counts within tolerance of the 90/3/3/2/2 mix
    no_orphans        every process ever seen (each worker_pid, the zygote and its children,
                      sampled every 0.1 s; tracked as pid + start time, so reused pids are not
                      confused) is gone within 3 s of engine.close()
    host_rss          host RSS growth from the end of warm-up to the end under --rss-bound-mb
    p99_normal        p99 of the normal dispatches (caller's wall clock) under --p99-ms
                      (the last two are reported but not enforced with --quick)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
SOAK_APP = ROOT / "tests" / "apps" / "soak_app"
FOREVER_APP = ROOT / "tests" / "apps" / "soak_forever"

MIX: dict[str, int] = {"normal": 90, "error": 3, "timeout": 3, "bomb": 2, "kill": 2}
"""Requests of each class per block of 100."""
EXPECTED = {"normal": "ok", "error": "handler_error", "timeout": "timeout",
            "bomb": "memory_limit", "kill": "crashed"}
EVENTS = {"normal": "onCallCreate", "error": "onCallUpdate", "timeout": "onCallCreate",
          "bomb": "onTicketCreate", "kill": "onCallTransfer"}
GROUPS = {"normal": "regular", "error": "regular", "bomb": "regular", "timeout": "forever",
          "kill": "victims"}
SLOW = frozenset({"timeout", "kill"})
SLACK: dict[str, tuple[frozenset[str], float]] = {
    # class: (outcomes tolerated instead of the expected one, at most this share of the class,
    # plus one). Kills: the kill missed or landed after the reply was written. Timeouts: no
    # worker came free within the 0.3 s the short deadline also allows for the wait.
    "kill": (frozenset({"ok"}), 0.05),
    "timeout": (frozenset({"overloaded"}), 0.05),
}

QUICK = {"seconds": 5.0, "apps": 6, "workers": 2, "threads": 4, "async_tasks": 1}
FULL = {"seconds": 60.0, "apps": 20, "workers": 2, "threads": 8, "async_tasks": 2}
MIX_TOLERANCE = 0.01
"""Outcome shares may differ from the mix by 1 point of all requests (or 3 requests)."""
ORPHAN_GRACE_SECONDS = 3.0
SAMPLE_SECONDS = 0.1
MAX_EXAMPLES = 12


# -- traffic -------------------------------------------------------------------------------

class Schedule:
    """Request classes in shuffled blocks of 100 that hold MIX exactly; thread-safe."""

    def __init__(self, seed: int, limit: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._block: list[str] = []
        self._seq = 0
        self._limit = limit

    def next(self) -> tuple[int, str] | None:
        """The next request's sequence number and class; None once `limit` were handed out."""
        with self._lock:
            if self._limit is not None and self._seq >= self._limit:
                return None
            if not self._block:
                self._block = [kind for kind, n in MIX.items() for _ in range(n)]
                self._rng.shuffle(self._block)
            self._seq += 1
            return self._seq, self._block.pop()


def make_payload(kind: str, seq: int, app_index: int, spin_seconds: float) -> dict[str, Any]:
    data: dict[str, Any] = {"seq": seq, "call": {
        "id": seq, "direction": "incoming", "phone_number": "+14155550199",
        "participants": [{"type": "Customer", "name": "Dana Whitfield"}]}}
    if kind == "kill":
        data["seconds"] = spin_seconds
    return {"account_id": f"acct-{app_index}", "domain": "soak.freshcaller.com",
            "event": EVENTS[kind], "region": "US", "timestamp": int(time.time()),
            "data": data, "iparams": {"vip_numbers": ["+12125550143"]}}


@dataclass
class CallerStats:
    """One caller's tallies (each caller owns its own: no lock on the hot path)."""

    requests: int = 0
    results: int = 0
    raised: list[str] = field(default_factory=list)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    normal_ms: array = field(default_factory=lambda: array("d"))
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    wrong_values: int = 0
    kills_confirmed: int = 0
    kills_missed: int = 0
    kills_late: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_EXAMPLES:
            self.problems.append(text)


def record(stats: CallerStats, kind: str, seq: int, result: Any, killed_pid: int | None,
           elapsed_ms: float) -> None:
    """Tally one result and check it against its request."""
    stats.results += 1
    outcome = result.outcome
    stats.outcomes[(kind, outcome)] += 1
    message = result.error.message if result.error is not None else ""
    if kind == "normal" and outcome == "ok":
        stats.normal_ms.append(elapsed_ms)
        if not (isinstance(result.value, dict) and result.value.get("seq") == seq):
            stats.wrong_values += 1
            stats.problem(f"normal #{seq}: value of another request: {result.value!r:.120}")
    elif kind == "error" and outcome == "handler_error":
        if message != f"soak error {seq}":
            stats.wrong_values += 1
            stats.problem(f"error #{seq}: message of another request: {message!r:.120}")
    elif kind == "kill":
        if outcome == "crashed":
            if killed_pid is not None and result.worker_pid == killed_pid \
                    and "SIGKILL" in message:
                stats.kills_confirmed += 1
            else:
                stats.problem(f"kill #{seq}: crashed, but killed pid {killed_pid}, result "
                              f"pid {result.worker_pid}: {message:.160}")
        elif outcome == "ok":
            if killed_pid is None:
                stats.kills_missed += 1
            else:
                stats.kills_late += 1
    if outcome != EXPECTED[kind]:
        stats.problem(f"{kind} #{seq} on {result.app}: {outcome} (pid {result.worker_pid}, "
                      f"{elapsed_ms:.0f} ms): {message:.200}")


# -- the injector --------------------------------------------------------------------------

@dataclass(eq=False)
class Ticket:
    app_key: str
    armed_at: float
    seen: dict[int, tuple[psutil.Process, float]] = field(default_factory=dict)
    killed_pid: int | None = None


class Injector(threading.Thread):
    """SIGKILLs the worker running an armed victim app's spinning handler (see the module
    docstring for why this finds the right worker, after its handler has started)."""

    def __init__(self, engine: Any, cpu_ms: float, poll_seconds: float = 0.002) -> None:
        super().__init__(daemon=True, name="soak-injector")
        self.engine = engine
        self.cpu_seconds = cpu_ms / 1000.0
        self.poll_seconds = poll_seconds
        self._lock = threading.Condition()
        self._armed: set[Ticket] = set()
        self._stopped = False
        self.kills = 0
        self.kill_delays_ms: list[float] = []

    def arm(self, app: Any) -> Ticket:
        ticket = Ticket(app.key, time.monotonic())
        with self._lock:
            self._armed.add(ticket)
            self._lock.notify()
        return ticket

    def disarm(self, ticket: Ticket) -> int | None:
        """The pid killed for this ticket, if any; no kill for it can happen afterwards."""
        with self._lock:
            self._armed.discard(ticket)
            return ticket.killed_pid

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify()

    def run(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and not any(
                        t.killed_pid is None for t in self._armed):
                    self._lock.wait(0.1)
                if self._stopped:
                    return
                tickets = [t for t in self._armed if t.killed_pid is None]
            workers = self.engine.workers()
            for ticket in tickets:
                self._watch(ticket, workers)
            time.sleep(self.poll_seconds)

    def _watch(self, ticket: Ticket, workers: list[Any]) -> None:
        for worker in workers:
            if worker.app_key != ticket.app_key:
                continue
            pid = worker.pid
            try:
                seen = ticket.seen.get(pid)
                if seen is None:
                    process = psutil.Process(pid)
                    ticket.seen[pid] = (process, _cpu_seconds(process))
                    continue
                process, first_cpu = seen
                if _cpu_seconds(process) - first_cpu < self.cpu_seconds:
                    continue
                with self._lock:
                    if ticket not in self._armed or ticket.killed_pid is not None:
                        return
                    process.send_signal(signal.SIGKILL)  # psutil: not if the pid was reused
                    ticket.killed_pid = pid
                self.kills += 1
                self.kill_delays_ms.append((time.monotonic() - ticket.armed_at) * 1000.0)
                return
            except psutil.Error:
                continue


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


# -- process and memory tracking -----------------------------------------------------------

class Watcher(threading.Thread):
    """Records every engine process (zygote, its children, each result's worker_pid) as
    (pid, start time), checked to be ours when first seen: the zygote is the engine's, a
    worker's parent is a zygote. Dead ones are pruned, so the set stays as small as the live
    tree (a dead process cannot come back; a reused pid has another start time). Samples the
    host's RSS too."""

    def __init__(self, engine: Any, warm_at: float) -> None:
        super().__init__(daemon=True, name="soak-watcher")
        self.engine = engine
        self.warm_at = warm_at
        self.me = psutil.Process()
        self.tracked: dict[int, float] = {}
        self.zygotes: dict[int, float] = {}
        self.seen_total = 0
        self.result_pids: deque[int] = deque()
        self.pid_bits = bytearray(_pid_max() // 8 + 1)  # every worker_pid, in 4 KiB-512 KiB
        self.rss_warm: int | None = None
        self.rss_peak = 0
        self._stop_event = threading.Event()

    def note_pid(self, pid: int | None) -> None:
        if pid is not None:
            self.result_pids.append(pid)  # deque.append is atomic: callers never wait

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        last_prune = time.monotonic()
        while not self._stop_event.wait(SAMPLE_SECONDS):
            self.scan()
            rss = self.me.memory_info().rss
            self.rss_peak = max(self.rss_peak, rss)
            if self.rss_warm is None and time.monotonic() >= self.warm_at:
                self.rss_warm = rss
            if time.monotonic() - last_prune >= 1.0:
                self.prune()
                last_prune = time.monotonic()

    def scan(self) -> None:
        zygote = self.engine._spawner.zygote_pid
        if zygote is not None and zygote not in self.zygotes:
            try:
                process = psutil.Process(zygote)
                if process.ppid() == os.getpid():
                    self.zygotes[zygote] = process.create_time()
                    self._track(zygote, self.zygotes[zygote])
            except psutil.Error:
                pass
        candidates = [w.pid for w in self.engine.workers()]
        for z in list(self.zygotes):
            candidates.extend(_children(z))
        while self.result_pids:
            pid = self.result_pids.popleft()
            if pid < len(self.pid_bits) * 8:
                self.pid_bits[pid >> 3] |= 1 << (pid & 7)
            candidates.append(pid)
        for pid in candidates:
            if pid in self.tracked:
                continue
            try:
                process = psutil.Process(pid)
                if process.ppid() in self.zygotes:
                    self._track(pid, process.create_time())
            except psutil.Error:
                pass  # already gone: it cannot be an orphan

    def _track(self, pid: int, created: float) -> None:
        if self.tracked.get(pid) != created:
            self.tracked[pid] = created
            self.seen_total += 1

    def prune(self) -> None:
        for pid, created in list(self.tracked.items()):
            if _alive(pid, created) is None:
                del self.tracked[pid]

    def leftovers(self) -> list[dict[str, Any]]:
        """Tracked processes still alive (zombies included, marked as such)."""
        found = []
        for pid, created in self.tracked.items():
            status = _alive(pid, created)
            if status is not None:
                found.append({"pid": pid, "status": status,
                              "zygote": pid in self.zygotes})
        return found


def _pid_max() -> int:
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 22


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        try:
            return [c.pid for c in psutil.Process(pid).children()]
        except psutil.Error:
            return []
    except (OSError, ValueError):
        return []


def _alive(pid: int, created: float) -> str | None:
    """The process's status if `pid` is still the process started at `created`."""
    try:
        process = psutil.Process(pid)
        if process.create_time() != created:
            return None
        return str(process.status())
    except psutil.Error:
        return None


# -- the run -------------------------------------------------------------------------------

@dataclass
class Context:
    engine: Any
    groups: dict[str, list[tuple[int, Any]]]
    schedule: Schedule
    injector: Injector
    watcher: Watcher
    gate: threading.BoundedSemaphore
    victim_locks: dict[str, threading.Lock]
    stop_at: float
    spin_seconds: float


def _claim_victim(ctx: Context, rng: random.Random) -> tuple[int, Any] | None:
    """A victim app no other kill is running on (else the injector could not tell two
    spinning workers of one app apart), locked; None while all are taken."""
    victims = list(ctx.groups["victims"])
    rng.shuffle(victims)
    for index, app in victims:
        if ctx.victim_locks[app.key].acquire(blocking=False):
            return index, app
    return None


def _release(ctx: Context, kind: str, app: Any) -> None:
    if kind == "kill":
        ctx.victim_locks[app.key].release()
    if kind in SLOW:
        ctx.gate.release()


def sync_caller(ctx: Context, stats: CallerStats, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < ctx.stop_at and (drawn := ctx.schedule.next()) is not None:
        seq, kind = drawn
        if kind in SLOW:
            ctx.gate.acquire()
        if kind == "kill":
            while (claimed := _claim_victim(ctx, rng)) is None:
                time.sleep(0.002)
            index, app = claimed
        else:
            index, app = rng.choice(ctx.groups[GROUPS[kind]])
        payload = make_payload(kind, seq, index, ctx.spin_seconds)
        try:
            ticket = ctx.injector.arm(app) if kind == "kill" else None
            stats.requests += 1
            start = time.perf_counter()
            try:
                result = ctx.engine.dispatch(app, payload)
            except Exception as exc:
                stats.raised.append(f"{kind} #{seq}: {type(exc).__name__}: {exc}"[:300])
                continue
            finally:
                killed = ctx.injector.disarm(ticket) if ticket is not None else None
            elapsed = (time.perf_counter() - start) * 1000.0
        finally:
            _release(ctx, kind, app)
        ctx.watcher.note_pid(result.worker_pid)
        record(stats, kind, seq, result, killed, elapsed)


async def async_caller(ctx: Context, stats: CallerStats, seed: int) -> None:
    rng = random.Random(seed)
    while time.monotonic() < ctx.stop_at and (drawn := ctx.schedule.next()) is not None:
        seq, kind = drawn
        if kind in SLOW:
            while not ctx.gate.acquire(blocking=False):
                await asyncio.sleep(0.002)
        if kind == "kill":
            while (claimed := _claim_victim(ctx, rng)) is None:
                await asyncio.sleep(0.002)
            index, app = claimed
        else:
            index, app = rng.choice(ctx.groups[GROUPS[kind]])
        payload = make_payload(kind, seq, index, ctx.spin_seconds)
        try:
            ticket = ctx.injector.arm(app) if kind == "kill" else None
            stats.requests += 1
            start = time.perf_counter()
            try:
                result = await ctx.engine.dispatch_async(app, payload)
            except Exception as exc:
                stats.raised.append(f"{kind} #{seq}: {type(exc).__name__}: {exc}"[:300])
                continue
            finally:
                killed = ctx.injector.disarm(ticket) if ticket is not None else None
            elapsed = (time.perf_counter() - start) * 1000.0
        finally:
            _release(ctx, kind, app)
        ctx.watcher.note_pid(result.worker_pid)
        record(stats, kind, seq, result, killed, elapsed)


def _async_thread(ctx: Context, stats: list[CallerStats], seed: int) -> None:
    async def main() -> None:
        await asyncio.gather(*(async_caller(ctx, s, seed + i) for i, s in enumerate(stats)))

    asyncio.run(main())


def copy_apps(directory: Path, apps: int) -> dict[str, list[Path]]:
    """`apps` app directories in three groups: forever (a fifth), victims (a tenth), regular."""
    if apps < 3:
        raise ValueError("the soak needs at least 3 apps (regular, forever, victim)")
    forever = max(1, apps // 5)
    victims = max(1, apps // 10)
    plan = ([("forever", FOREVER_APP)] * forever + [("victims", SOAK_APP)] * victims
            + [("regular", SOAK_APP)] * (apps - forever - victims))
    groups: dict[str, list[Path]] = {"regular": [], "forever": [], "victims": []}
    for i, (group, source) in enumerate(plan):
        target = directory / f"soak{i:02d}_{group}"
        shutil.copytree(source, target)
        groups[group].append(target)
    return groups


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run(seconds: float, apps: int = 20, workers: int = 2, threads: int = 8, *,
        async_tasks: int = 2, timeout: float = 0.3, spin_seconds: float = 3.0,
        kill_cpu_ms: float = 30.0, slow_slots: int | None = None,
        warmup: float | None = None, rss_bound_mb: float = 50.0, p99_ms: float = 500.0,
        seed: int = 0, quick: bool = False, max_requests: int | None = None
        ) -> dict[str, Any]:
    """Run the soak and return its figures and checks (see the module docstring). Traffic
    stops after `seconds`, or `max_requests` requests if that comes first (a multiple of 100
    gives the mix exactly); `quick` reports the host-RSS and p99 checks without enforcing
    them."""
    from runtime import Engine

    if threads + async_tasks < 1:
        raise ValueError("the soak needs at least one thread or async task")
    slow_slots = slow_slots if slow_slots is not None else max(1, workers - 1)
    warmup = warmup if warmup is not None else min(10.0, seconds * 0.2)
    directory = tempfile.TemporaryDirectory(prefix="handlerbox-soak-")
    began_wall = time.time() - 1.0  # start times are rounded to clock ticks
    engine = Engine(workers=workers)
    closed = False
    try:
        paths = copy_apps(Path(directory.name), apps)
        groups: dict[str, list[tuple[int, Any]]] = {}
        index = 0
        for group, dirs in paths.items():
            groups[group] = []
            for path in dirs:
                app = engine.load_app(path, timeout=timeout if group == "forever" else None)
                groups[group].append((index, app))
                index += 1
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
        rss_end = watcher.me.memory_info().rss
        rss_warm = watcher.rss_warm if watcher.rss_warm is not None else rss_end
        spawns = getattr(engine._spawner, "_next_id", None)
        close_start = time.monotonic()
        _close(engine, drain=not hung_threads)  # a hung dispatch must not hang the close too
        closed = True
        close_ms = (time.monotonic() - close_start) * 1000.0
        leftovers = watcher.leftovers()
        grace_end = time.monotonic() + ORPHAN_GRACE_SECONDS
        while leftovers and time.monotonic() < grace_end:
            time.sleep(0.05)
            leftovers = watcher.leftovers()
        # Zombies are dead: only ours to reap if their parent is this process.
        orphans = [p for p in leftovers if p["status"] != psutil.STATUS_ZOMBIE
                   or _parent(p["pid"]) == os.getpid()]
        # Belt and braces: no descendant of this process started during the run from the
        # zygote's command line may be alive, tracked or not.
        listed = {p["pid"] for p in orphans}
        orphans += [p for p in _engine_descendants(began_wall) if p["pid"] not in listed]
    finally:
        if not closed:
            _close(engine, drain=False)
        directory.cleanup()

    every = [*sync_stats, *async_stats]
    return summarize(
        every, injector=injector, watcher=watcher, orphans=orphans, leftovers=leftovers,
        hung_threads=hung_threads, rss_warm=rss_warm, rss_end=rss_end,
        settings={"seconds": seconds, "apps": apps, "workers": workers, "threads": threads,
                  "async_tasks": async_tasks, "timeout_s": timeout,
                  "spin_seconds": spin_seconds, "kill_cpu_ms": kill_cpu_ms,
                  "slow_slots": slow_slots, "warmup_s": warmup, "seed": seed,
                  "quick": quick, "max_requests": max_requests,
                  "groups": {g: len(m) for g, m in groups.items()}},
        traffic_seconds=traffic_seconds, close_ms=close_ms, spawns=spawns,
        rss_bound_mb=rss_bound_mb, p99_bound_ms=p99_ms, quick=quick)


def _close(engine: Any, drain: bool) -> None:
    """engine.close(drain=...) where the engine has it (older engines: close())."""
    try:
        engine.close(drain=drain)
    except TypeError:
        engine.close()


def _engine_descendants(since: float) -> list[dict[str, Any]]:
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if (process.create_time() >= since and process.status() != psutil.STATUS_ZOMBIE
                    and "runtime.zygote" in " ".join(process.cmdline())):
                found.append({"pid": process.pid, "status": str(process.status()),
                              "zygote": None})
        except psutil.Error:
            continue
    return found


def _parent(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def summarize(stats: list[CallerStats], *, injector: Injector, watcher: Watcher,
              orphans: list[dict[str, Any]], leftovers: list[dict[str, Any]],
              hung_threads: list[str], rss_warm: int, rss_end: int,
              settings: dict[str, Any], traffic_seconds: float, close_ms: float,
              spawns: int | None, rss_bound_mb: float, p99_bound_ms: float,
              quick: bool) -> dict[str, Any]:
    requests = sum(s.requests for s in stats)
    results = sum(s.results for s in stats)
    raised = [text for s in stats for text in s.raised]
    by_class: Counter[tuple[str, str]] = Counter()
    for s in stats:
        by_class.update(s.outcomes)
    classes = {kind: {outcome: n for (k, outcome), n in sorted(by_class.items()) if k == kind}
               for kind in MIX}
    outcomes: Counter[str] = Counter()
    for (_, outcome), n in by_class.items():
        outcomes[outcome] += n
    problems = [text for s in stats for text in s.problems][:MAX_EXAMPLES]
    wrong_values = sum(s.wrong_values for s in stats)
    normal = sorted(x for s in stats for x in s.normal_ms)
    p50, p99 = percentile(normal, 0.50), percentile(normal, 0.99)
    kills = {"injected": injector.kills,
             "confirmed": sum(s.kills_confirmed for s in stats),
             "missed": sum(s.kills_missed for s in stats),
             "late": sum(s.kills_late for s in stats),
             "p50_kill_delay_ms": _round(percentile(sorted(injector.kill_delays_ms), 0.5))}
    growth_mb = (rss_end - rss_warm) / 2**20

    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, ok: bool, detail: str, enforced: bool = True) -> None:
        checks[name] = {"ok": bool(ok), "enforced": enforced, "detail": detail}

    check("one_result_each", results == requests and not raised and not hung_threads,
          f"{requests} requests, {results} results, {len(raised)} raised, "
          f"{len(hung_threads)} callers hung")
    off_class = []
    for kind, counts in classes.items():
        total = sum(counts.values())
        tolerated, share = SLACK.get(kind, (frozenset(), 0.0))
        allowed = int(share * total) + 1 if tolerated else 0
        slack = sum(n for outcome, n in counts.items() if outcome in tolerated)
        other = total - counts.get(EXPECTED[kind], 0) - slack
        if other or slack > allowed:
            off_class.append(f"{kind}: {counts} (tolerated {slack}/{allowed})")
    verified = (kills["confirmed"] == classes["kill"].get("crashed", 0))
    check("outcomes", not off_class and not wrong_values and verified,
          "; ".join(off_class) or (f"every class ended as expected; {wrong_values} wrong "
                                   f"values; {kills['confirmed']} kills confirmed by pid"
                                   + ("" if verified else " (some crashed kills unconfirmed)")))
    mix_off = []
    for kind, n in MIX.items():
        expected_n = n / 100.0 * requests
        got = outcomes.get(EXPECTED[kind], 0)
        if abs(got - expected_n) > max(3.0, MIX_TOLERANCE * requests):
            mix_off.append(f"{EXPECTED[kind]} {got} vs {expected_n:.0f}")
    check("mix", not mix_off and requests > 0,
          "; ".join(mix_off) or f"within {MIX_TOLERANCE:.0%} of {requests} (or 3 requests)")
    check("no_orphans", not orphans,
          f"{watcher.seen_total} engine processes tracked alive ({len(watcher.zygotes)} "
          f"zygote), every worker_pid checked; {len(orphans)} left after close"
          + (f": {orphans[:5]}" if orphans else "")
          + (f"; {len(leftovers) - len(orphans)} reparented zombies"
             if len(leftovers) > len(orphans) else ""))
    check("host_rss", growth_mb <= rss_bound_mb,
          f"{growth_mb:+.1f} MB after warm-up (bound {rss_bound_mb:g} MB)", enforced=not quick)
    check("p99_normal", p99 is not None and p99 <= p99_bound_ms,
          f"p99 {p99 if p99 is None else round(p99, 1)} ms (bound {p99_bound_ms:g} ms)",
          enforced=not quick)
    return {
        "settings": settings,
        "traffic_seconds": round(traffic_seconds, 2),
        "requests": requests, "results": results,
        "rate_per_s": round(requests / traffic_seconds, 1) if traffic_seconds else None,
        "outcomes": dict(sorted(outcomes.items())),
        "classes": classes,
        "normal_ms": {"count": len(normal), "p50": _round(p50), "p99": _round(p99),
                      "max": _round(normal[-1] if normal else None)},
        "kills": kills,
        "host_rss_mb": {"warm": round(rss_warm / 2**20, 1), "end": round(rss_end / 2**20, 1),
                        "peak": round(watcher.rss_peak / 2**20, 1),
                        "growth": round(growth_mb, 1)},
        "engine_processes_seen": watcher.seen_total,
        "distinct_worker_pids": sum(bin(b).count("1") for b in watcher.pid_bits),
        "spawn_requests": spawns,
        "orphans": orphans,
        "close_ms": round(close_ms, 1),
        "raised": raised[:MAX_EXAMPLES],
        "hung_threads": hung_threads,
        "problems": problems,
        "problem_count": sum(s.problem_count for s in stats),
        "checks": checks,
        "passed": all(c["ok"] for c in checks.values() if c["enforced"]),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# -- the command ---------------------------------------------------------------------------

def describe(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        f"soak: {report['traffic_seconds']:.1f} s, {s['apps']} apps ({s['groups']}), "
        f"{s['workers']} workers, {s['threads']} threads + {s['async_tasks']} async tasks, "
        f"slow slots {s['slow_slots']}",
        f"requests {report['requests']}  results {report['results']}  "
        f"({report['rate_per_s']}/s)",
        "outcomes " + "  ".join(f"{k} {v}" for k, v in report["outcomes"].items()),
    ]
    for kind, counts in report["classes"].items():
        lines.append(f"  {kind:<8} -> " + "  ".join(f"{k} {v}" for k, v in counts.items()))
    n, k, r = report["normal_ms"], report["kills"], report["host_rss_mb"]
    lines += [
        f"normal dispatches: {n['count']}, p50 {n['p50']} ms, p99 {n['p99']} ms, "
        f"max {n['max']} ms",
        f"kills: {k['injected']} injected, {k['confirmed']} confirmed crashed by pid, "
        f"{k['missed']} missed, {k['late']} late; median {k['p50_kill_delay_ms']} ms "
        "from arming to the kill",
        f"host RSS: {r['warm']} MB after warm-up, {r['end']} MB at the end "
        f"({r['growth']:+} MB), peak {r['peak']} MB",
        f"workers: {report['spawn_requests']} spawned, {report['distinct_worker_pids']} "
        f"distinct worker pids in results; {report['engine_processes_seen']} engine "
        f"processes tracked alive; orphans after close {len(report['orphans'])}, close "
        f"{report['close_ms']} ms",
    ]
    if report["problems"]:
        lines.append(f"unexpected results ({report['problem_count']}), first ones:")
        lines += [f"  {p}" for p in report["problems"]]
    if report["raised"]:
        lines.append("dispatches that raised:")
        lines += [f"  {p}" for p in report["raised"]]
    for name, c in report["checks"].items():
        mark = "PASS" if c["ok"] else ("FAIL" if c["enforced"] else "MISS (not enforced)")
        lines.append(f"{mark:<4} {name}: {c['detail']}")
    lines.append("PASSED" if report["passed"] else "FAILED")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="traffic duration (default 60, or 5 with --quick)")
    parser.add_argument("--apps", type=int, default=None, help="apps (default 20; quick 6)")
    parser.add_argument("--workers", type=int, default=None, help="worker budget (default 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="dispatching threads (default 8; quick 4)")
    parser.add_argument("--async-tasks", type=int, default=None,
                        help="coroutines on one asyncio thread (default 2; quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a few seconds, small numbers; RSS and p99 not enforced")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--timeout", type=float, default=0.3,
                        help="the forever apps' timeout override in seconds (default 0.3)")
    parser.add_argument("--spin-seconds", type=float, default=3.0,
                        help="how long a kill target spins if nobody kills it (default 3)")
    parser.add_argument("--kill-cpu-ms", type=float, default=30.0,
                        help="CPU a kill target must have used before the kill (default 30)")
    parser.add_argument("--slow-slots", type=int, default=None,
                        help="timeouts and kills in flight at once (default workers - 1)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before the RSS baseline (default 20%% of T, at most 10)")
    parser.add_argument("--rss-bound-mb", type=float, default=50.0)
    parser.add_argument("--p99-ms", type=float, default=500.0,
                        help="bound on p99 of the normal dispatches (default 500)")
    parser.add_argument("--max-requests", type=int, default=None,
                        help="stop after this many requests, if before --seconds")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    defaults = QUICK if args.quick else FULL
    numbers = {name: getattr(args, name) if getattr(args, name) is not None else default
               for name, default in defaults.items()}
    report = run(numbers["seconds"], numbers["apps"], numbers["workers"], numbers["threads"],
                 async_tasks=numbers["async_tasks"], timeout=args.timeout,
                 spin_seconds=args.spin_seconds, kill_cpu_ms=args.kill_cpu_ms,
                 slow_slots=args.slow_slots, warmup=args.warmup,
                 rss_bound_mb=args.rss_bound_mb, p99_ms=args.p99_ms, seed=args.seed,
                 quick=args.quick, max_requests=args.max_requests)
    print(json.dumps(report, indent=2) if args.json else describe(report))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
