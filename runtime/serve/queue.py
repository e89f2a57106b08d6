"""The bounded queue of product events between the door and the engine, and its consumer
tasks; no untrusted input (jobs hold payloads the door has validated).

    door --offer(job)--> [ at most `size` waiting ] --> N consumers --> run(job) --> engine
            False: full or draining (the caller answers 503 with Retry-After)
    door --reserve()--> journal the job --> put_reserved(job)     (a 202: the place is held
                                                                   while the row is written)

A job the engine was too busy for can be put back with `later(job, delay)` (a timer, not a
sleeping consumer). `drain(grace)` stops intake, lets the consumers empty the queue for up to
`grace` seconds (None: however long it takes), then lets the jobs already running finish and
returns the jobs that never started (the caller keeps them for the next start). Jobs
recovered at start-up go in with `force=True`: the bound is for new intake, not for work
already accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """One product event: `payload` is the validated JSON, `waiter` is set when a caller
    waits for the result (?wait=true), `durable` when its row is in the journal."""

    id: str
    app: str
    payload: bytes
    account_id: str
    event: str
    durable: bool
    waiter: asyncio.Future[Any] | None = None
    accepted: float = field(default_factory=time.monotonic)
    accepted_at: float = field(default_factory=time.time)
    attempts: int = 1


class EventQueue:
    """Bounded intake, N consumers; `run(job)` must not raise (it records its own failures)."""

    def __init__(self, run: Callable[[Job], Awaitable[None]], size: int, consumers: int) -> None:
        self.run, self.size, self.consumers = run, size, consumers
        self._queue: asyncio.Queue[Job] = asyncio.Queue()  # bounded by offer(), not here
        self._tasks: list[asyncio.Task[None]] = []
        self._open = False
        self._halt = False
        self._left: list[Job] = []
        self._reserved = 0
        self._later: dict[str, tuple[asyncio.TimerHandle, Job]] = {}
        self.running = 0

    @property
    def depth(self) -> int:
        """Jobs waiting: queued, and set aside to try again."""
        return self._queue.qsize() + len(self._later)

    def start(self) -> None:
        self._open = True
        self._tasks = [asyncio.create_task(self._consume(), name=f"handlerbox-consumer-{i}")
                       for i in range(self.consumers)]

    def offer(self, job: Job, force: bool = False) -> bool:
        """Queue `job`; False when the queue is full or closed to new work."""
        if not force and not self.reserve():
            return False
        self.put_reserved(job, force)
        return True

    def reserve(self) -> bool:
        """Hold a place for a job that is being journalled; False when there is none."""
        if not self._open or self._queue.qsize() + self._reserved >= self.size:
            return False
        self._reserved += 1
        return True

    def put_reserved(self, job: Job, force: bool = False) -> None:
        """Queue a job whose place was reserved (or, with `force`, one that needs none)."""
        if not force:
            self._reserved -= 1
        self._queue.put_nowait(job)

    def release(self) -> None:
        """Give back a reserved place that will not be used."""
        self._reserved -= 1

    def close_intake(self) -> None:
        self._open = False

    def later(self, job: Job, delay: float) -> None:
        """Queue `job` again after `delay` seconds (the engine was too busy for it)."""
        handle = asyncio.get_running_loop().call_later(delay, self._again, job.id)
        self._later[job.id] = (handle, job)

    def _again(self, job_id: str) -> None:
        _, job = self._later.pop(job_id)
        self._queue.put_nowait(job)

    async def drain(self, grace: float | None) -> list[Job]:
        """Stop intake, run what is queued for up to `grace` seconds, wait for running jobs;
        returns the jobs that never started."""
        self._open = False
        for handle, job in self._later.values():  # no waiting out a retry delay now
            handle.cancel()
            self._queue.put_nowait(job)
        self._later.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), grace)
        self._halt = True  # consumers now set aside what they take instead of running it
        while not self._queue.empty():
            self._left.append(self._queue.get_nowait())
            self._queue.task_done()
        await self._queue.join()  # only the running jobs are left to finish
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self._left

    async def _consume(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                if self._halt:
                    self._left.append(job)
                    continue
                self.running += 1
                try:
                    await self.run(job)
                finally:
                    self.running -= 1
            finally:
                self._queue.task_done()
