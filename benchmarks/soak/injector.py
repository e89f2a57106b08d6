"""Killing from outside: the thread that SIGKILLs the worker running a victim app's handler.

No untrusted input. A kill request's caller arms the injector with its victim app, then
dispatches the app's spinning handler (which spins for --spin-seconds, 3 s, far longer than it
takes to be killed). The injector polls engine.workers() for a worker bound to that app; victim
apps get no other traffic, and at most one kill runs on each (traffic.py), so that worker is
ours. It then waits until the worker has used --kill-cpu-ms (30 ms) of CPU since it was first
seen: binding a worker costs about a millisecond, so only the handler burns that much, which
proves the handler is running (a worker killed before its handler starts is retried on another
one by design, and would end `ok`). Then it SIGKILLs that pid (psutil, which refuses a reused
pid). The dispatch must end `crashed` with SIGKILL named and `worker_pid` equal to the pid
killed. `disarm` and the kill share a lock, so no kill lands once the caller has its result. A
kill can still miss (the handler finishes before the injector sees it spin: it would need 3 s
of delay) or land after the worker wrote its reply; such a dispatch ends `ok`, and is counted
as slack, not success.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from handlerbox import App, Engine
    from handlerbox.runtime.spawner import WorkerProcess


@dataclass(eq=False)
class Ticket:
    """One armed kill: the victim app, and the CPU time of each of its workers when first
    seen."""

    app_key: str
    armed_at: float
    seen: dict[int, tuple[psutil.Process, float]] = field(default_factory=dict)
    killed_pid: int | None = None


class Injector(threading.Thread):
    """SIGKILLs the worker running an armed victim app's spinning handler (see the module
    docstring for why this finds the right worker, after its handler has started)."""

    def __init__(self, engine: Engine, cpu_ms: float, poll_seconds: float = 0.002) -> None:
        super().__init__(daemon=True, name="soak-injector")
        self.engine = engine
        self.cpu_seconds = cpu_ms / 1000.0
        self.poll_seconds = poll_seconds
        self._lock = threading.Condition()
        self._armed: set[Ticket] = set()
        self._stopped = False
        self.kills = 0
        self.kill_delays_ms: list[float] = []

    def arm(self, app: App) -> Ticket:
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

    def _watch(self, ticket: Ticket, workers: list[WorkerProcess]) -> None:
        for worker in workers:
            if not (worker.app_key or "").startswith(ticket.app_key + "/"):
                continue  # workers serve one installation: "<app key>/<account id>"
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
