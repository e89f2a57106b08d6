"""The scheduler loop: one background thread that fires due schedule occurrences on time.
No untrusted input: it moves stored occurrences from the schedule store to `fire`.

    wake() ─┐
    max_wait ┼─> next_due() <= now? ─> claim_due(now) ─> fire(occurrence) ─> engine queue
    next_due ┘            (one transaction: engines sharing the store never both claim one)

It sleeps on an Event until the earliest next_run, `max_wait` (another engine may have added
a schedule to the shared store) or `wake()` (this process added one), whichever is first: no
busy loop, and it takes the write lock only when something is due. `fire` must hand the
occurrence off and return (the engine queues onScheduledEvent); an exception from `fire` or the
store is logged and the loop carries on.

    store = SQLiteSchedules(db)
    scheduler = Scheduler(store, fire=engine_hand_off)
    service = ScheduleService(store, on_change=scheduler.wake)
    with scheduler: ...                                    # start() ... stop()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from types import TracebackType

from handlerbox.runtime.services.base import Clock
from handlerbox.runtime.services.schedules import Occurrence, ScheduleBackend

log = logging.getLogger(__name__)

_RECHECK_S = 0.05
"""After a claim that found nothing (another engine took it first): a short pause, so a store
that says "due" but yields nothing cannot spin the loop."""


class Scheduler:
    """Fires due occurrences from `backend` by calling `fire(occurrence)` on its own thread.

    `clock` is wall-clock epoch seconds (due times are wall-clock); `max_wait` bounds how long
    a schedule added by another process can go unseen; `batch` is the most occurrences claimed
    per transaction. `on_lag(occurrence, seconds)` is a metrics hook called before each fire.
    Metrics: `last_lag_seconds` (fired_at - due of the last occurrence), `fired`,
    `fire_errors`, `store_errors`; `stats()` returns them keyed `scheduler.*`.
    """

    def __init__(self, backend: ScheduleBackend, fire: Callable[[Occurrence], None],
                 clock: Clock = time.time, max_wait: float = 0.5, batch: int = 100,
                 on_lag: Callable[[Occurrence, float], None] | None = None,
                 apps: Callable[[], Collection[str]] | None = None) -> None:
        if max_wait <= 0 or batch < 1:
            raise ValueError("max_wait must be positive and batch at least 1")
        self.backend, self.fire, self.clock = backend, fire, clock
        self.max_wait, self.batch, self.on_lag = max_wait, batch, on_lag
        self.apps = apps  # the apps this scheduler can run: it claims only theirs
        self.last_lag_seconds: float | None = None
        self.fired = self.fire_errors = self.store_errors = 0
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the loop thread (once per Scheduler)."""
        if self._thread is not None:
            raise RuntimeError("this Scheduler was already started; make a new one")
        self._thread = threading.Thread(target=self._run, name="handlerbox-scheduler",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the loop and join it; a `fire` in progress finishes first. Idempotent."""
        self._stopping.set()
        self._wakeup.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Look at the store again now: a schedule was created, updated or resumed."""
        self._wakeup.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, float | int | None]:
        return {"scheduler.last_lag_seconds": self.last_lag_seconds,
                "scheduler.fired": self.fired, "scheduler.fire_errors": self.fire_errors,
                "scheduler.store_errors": self.store_errors}

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.is_set():
            # Cleared before looking: a wake() from here on is seen by the wait below.
            self._wakeup.clear()
            try:
                wait = self._tick()
            except Exception:
                self.store_errors += 1
                log.exception("scheduler: the schedule store failed; retrying in %.1f s",
                              self.max_wait)
                wait = self.max_wait
            if wait > 0:
                self._wakeup.wait(wait)

    def _tick(self) -> float:
        """Fire what is due now; return how long to sleep before looking again."""
        apps = None if self.apps is None else self.apps()
        due = self.backend.next_due(apps)
        now = self.clock()
        if due is None or due > now:
            return self.max_wait if due is None else min(self.max_wait, due - now)
        claimed = self.backend.claim_due(now, self.batch, apps)
        for occurrence in claimed:  # all of them, even if stop() came: claimed means ours
            self._fire(occurrence)
        return 0.0 if claimed else _RECHECK_S

    def _fire(self, occurrence: Occurrence) -> None:
        lag = self.clock() - occurrence.due
        self.last_lag_seconds = lag
        try:
            if self.on_lag is not None:
                self.on_lag(occurrence, lag)
            self.fire(occurrence)
        except Exception:
            self.fire_errors += 1
            log.exception("scheduler: fire failed for %s", occurrence.key)
        else:
            self.fired += 1
