"""Fair admission of dispatches: concurrency caps per app and per installation, waiters served
round-robin across apps, and long-running handlers demoted on the CPU. No untrusted input; no
threads (the pool calls it under its own lock).

A dispatch holds a *slot* from admission until its worker is released. Slots are bounded three
ways: the global budget (dispatches running at once), `per_app` and `per_installation`. A
dispatch that cannot run now waits in its app's queue. When a slot frees, `grant` hands it
straight to the next waiter that may run: the app running the fewest dispatches goes first,
apps running as many take turns (round-robin: after its turn an app goes to the back of the
line), and within an app waiters go first come, first served (one whose installation is at its
cap is passed over, keeping its place). So an app that floods the engine, or whose handlers are
slow, holds at most `per_app` slots, and another app's dispatch waits for the next slot to come
free, never for the flood's backlog.

A slot is handed over, never left free for whoever asks first: a newcomer runs only on a slot
no waiter could take. A granted waiter owns its slot, so one that gives up anyway (it timed
out, or its caller was cancelled) must hand the slot back (`free`), which grants it on.

    admission = Admission(budget=4, per_app=2)
    if not admission.admit(key):          # key: "<app key>/<account id>"
        admission.enqueue(waiter)         # raises Overloaded when a queue is full
    ...
    for waiter in admission.free(key):    # the dispatch is done: its slot goes on
        waiter.wake()

Slots decide who runs, not how the CPU is shared among those running. A handler that runs
longer than DEMOTE_AFTER_SECONDS is demoted (`demote`): nice 19 for its process and for its
autogroup (each worker is a session of its own, so Linux first shares the CPU between
sessions: the process's own nice alone would not yield). Short dispatches of other apps then
preempt it at once instead of waiting out its time slice (4 ms here, the p99 of a round trip
beside two spinning handlers). The pool restores a demoted worker when it is released
(`restore`), or does not keep it when it may not (raising priority needs CAP_SYS_NICE).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from collections.abc import Callable

from handlerbox.runtime.errors import Overloaded

DEMOTE_AFTER_SECONDS = 0.05
"""A handler running longer than this is demoted on the CPU (interactive handlers take
microseconds to milliseconds)."""

DEMOTED_NICE = 19


def app_of(key: str) -> str:
    """The app part of a pool key ("<app key>/<account id>"; app keys hold no "/")."""
    return key.partition("/")[0]


class Waiter:
    """A dispatch waiting for a slot: woken by an async callback, or by a threading.Event that
    the pool makes only once the caller really has to wait. `granted` turns true (under the
    pool's lock) when a slot was handed to it."""

    __slots__ = ("app", "callback", "event", "granted", "key")

    def __init__(self, key: str, wake: Callable[[], None] | None = None) -> None:
        self.key = key
        self.app = app_of(key)
        self.callback = wake
        self.event: threading.Event | None = None
        self.granted = False

    def wake(self) -> None:
        if self.callback is not None:
            self.callback()
        elif self.event is not None:
            self.event.set()


class Admission:
    """Slots in use per app and per installation, and the waiting dispatches by app.

    `per_app` and `per_installation` of None mean the budget. `max_queue` bounds all waiters,
    `max_queue_per_installation` the waiters of one pool key."""

    def __init__(self, budget: int, per_app: int | None = None,
                 per_installation: int | None = None, max_queue: int = 1000,
                 max_queue_per_installation: int | None = None) -> None:
        self.budget = budget
        self.per_app = budget if per_app is None else per_app
        self.per_installation = budget if per_installation is None else per_installation
        self.max_queue = max_queue
        self.max_queue_per_installation = (max_queue if max_queue_per_installation is None
                                           else max_queue_per_installation)
        # Plain dicts, not Counters: this is the hot path, and a Counter update costs 4x.
        self.running = 0
        self.by_app: dict[str, int] = {}
        self.by_installation: dict[str, int] = {}
        self.waiting = 0
        self.waiting_by_installation: dict[str, int] = {}
        self._queues: OrderedDict[str, deque[Waiter]] = OrderedDict()
        """App -> its waiters, oldest first; the dict's order is the apps' turn order."""

    # -- slots -----------------------------------------------------------------------------

    def admit(self, key: str) -> bool:
        """Take a slot for `key` if one is free for it now (every dispatch: kept inline)."""
        app = key.partition("/")[0]
        by_app, by_installation = self.by_app, self.by_installation
        running_app, running_installation = by_app.get(app, 0), by_installation.get(key, 0)
        if (self.running >= self.budget or running_app >= self.per_app
                or running_installation >= self.per_installation):
            return False
        self.running += 1
        by_app[app] = running_app + 1
        by_installation[key] = running_installation + 1
        return True

    def free(self, key: str) -> list[Waiter]:
        """Give back `key`'s slot; returns the waiters granted a slot as a result (to wake)."""
        app = key.partition("/")[0]
        self.running -= 1
        _decrement(self.by_app, app)
        _decrement(self.by_installation, key)
        return self.grant() if self.waiting else []

    def _take(self, key: str, app: str) -> None:
        self.running += 1
        self.by_app[app] = self.by_app.get(app, 0) + 1
        self.by_installation[key] = self.by_installation.get(key, 0) + 1

    # -- waiters ---------------------------------------------------------------------------

    def enqueue(self, waiter: Waiter) -> None:
        """Queue a waiter behind its app's others; Overloaded when a bound is reached."""
        if self.waiting >= self.max_queue:
            raise Overloaded(f"the wait queue is full ({self.max_queue} dispatches waiting "
                             "for a worker; config.max_queue)")
        if self.waiting_by_installation.get(waiter.key, 0) >= self.max_queue_per_installation:
            raise Overloaded(f"this installation's wait queue is full "
                             f"({self.max_queue_per_installation} dispatches waiting; "
                             "config.max_queue_per_app)")
        queue = self._queues.get(waiter.app)
        if queue is None:
            queue = self._queues[waiter.app] = deque()
        queue.append(waiter)
        self.waiting += 1
        self.waiting_by_installation[waiter.key] = (
            self.waiting_by_installation.get(waiter.key, 0) + 1)

    def withdraw(self, waiter: Waiter) -> bool:
        """Take a waiter out of its queue; False when it is no longer there (granted)."""
        queue = self._queues.get(waiter.app)
        if queue is None:
            return False
        try:
            queue.remove(waiter)
        except ValueError:
            return False
        if not queue:
            del self._queues[waiter.app]
        self._forget(waiter)
        return True

    def grant(self) -> list[Waiter]:
        """Hand free slots to waiters that may run, apps in turn; returns those granted."""
        granted = []
        while self.waiting and self.running < self.budget:
            waiter = self._next()
            if waiter is None:
                break
            self._take(waiter.key, waiter.app)
            waiter.granted = True
            granted.append(waiter)
        return granted

    def drain(self) -> list[Waiter]:
        """Every waiter, out of the queues (the pool is closing: they are told so)."""
        everyone = [w for queue in self._queues.values() for w in queue]
        self._queues.clear()
        self.waiting = 0
        self.waiting_by_installation.clear()
        return everyone

    def _next(self) -> Waiter | None:
        """The next waiter to run: of the apps with a waiter that may run, the one running
        the fewest dispatches now (ties: the first in turn order), its oldest such waiter;
        that app then goes to the back of the line."""
        best: Waiter | None = None
        fewest = self.per_app
        for app, queue in self._queues.items():
            running = self.by_app.get(app, 0)
            if running >= fewest:
                continue
            for waiter in queue:
                if self.by_installation.get(waiter.key, 0) < self.per_installation:
                    best, fewest = waiter, running
                    break
            if fewest == 0:
                break
        if best is None:
            return None
        queue = self._queues[best.app]
        if best is queue[0]:
            queue.popleft()
        else:
            queue.remove(best)
        if queue:
            self._queues.move_to_end(best.app)
        else:
            del self._queues[best.app]
        self._forget(best)
        return best

    def _forget(self, waiter: Waiter) -> None:
        self.waiting -= 1
        _decrement(self.waiting_by_installation, waiter.key)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


# -- CPU priority of long-running handlers ----------------------------------------------------

def demote(pid: int) -> bool:
    """Nice 19 for a worker and its autogroup; False when the process is gone."""
    return _set_nice(pid, DEMOTED_NICE)


def restore(pid: int) -> bool:
    """Nice 0 again; False when this process may not (or the worker is gone)."""
    return _set_nice(pid, 0)


def _set_nice(pid: int, nice: int) -> bool:
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        group = _autogroup(pid)
    except OSError:
        return False
    if group is None or group == _autogroup(os.getpid()):
        return True  # no autogroups, or the worker shares ours: its own nice is what counts
    try:
        with open(f"/proc/{pid}/autogroup", "w", encoding="ascii") as f:
            f.write(str(nice))
    except OSError:
        return False
    return True


def _autogroup(pid: int) -> str | None:
    """The name of a process's autogroup ("/autogroup-42"), None without autogroups."""
    try:
        with open(f"/proc/{pid}/autogroup", encoding="ascii") as f:
            return f.read().split(" ", 1)[0]
    except FileNotFoundError:
        return None
